#include "quic/peer_identity.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

namespace connmgr::quic {

std::string spki_pin_of(const gnutls_datum_t& der) {
  gnutls_x509_crt_t crt = nullptr;
  gnutls_pubkey_t pub = nullptr;
  gnutls_datum_t spki{nullptr, 0};
  std::string pin;
  if (gnutls_x509_crt_init(&crt) == 0 && gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER) == 0 &&
      gnutls_pubkey_init(&pub) == 0 && gnutls_pubkey_import_x509(pub, crt, 0) == 0 &&
      gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &spki) == 0) {
    unsigned char digest[32];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, spki.data, spki.size, digest) == 0) {
      gnutls_datum_t raw{digest, sizeof digest};
      gnutls_datum_t b64{nullptr, 0};
      if (gnutls_base64_encode2(&raw, &b64) == 0) {
        pin.assign(reinterpret_cast<const char*>(b64.data), b64.size);
        gnutls_free(b64.data);
      }
    }
  }
  if (spki.data) gnutls_free(spki.data);
  if (pub) gnutls_pubkey_deinit(pub);
  if (crt) gnutls_x509_crt_deinit(crt);
  return pin;
}

Verdict judge_peer(gnutls_session_t session, const std::string& expected_name,
                   const std::optional<std::string>& pin_sha256, std::string* detail) {
  if (pin_sha256) {
    unsigned int n = 0;
    const gnutls_datum_t* certs = gnutls_certificate_get_peers(session, &n);
    if (!certs || n == 0) {
      *detail = "the peer sent no certificate";
      return Verdict::kPinMismatch;
    }
    const std::string got = spki_pin_of(certs[0]);
    if (got != *pin_sha256) {
      *detail = "the peer's key has pin " + (got.empty() ? std::string("(unreadable)") : got) +
                ", not the configured " + *pin_sha256;
      return Verdict::kPinMismatch;
    }
    return Verdict::kAccepted;
  }
  unsigned int status = 0;
  // The name is checked against DNS names, or IP addresses when it is one.
  int rc = gnutls_certificate_verify_peers3(session, expected_name.c_str(), &status);
  if (rc != 0 || status != 0) {
    gnutls_datum_t out{nullptr, 0};
    if (rc == 0 &&
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
      *detail = std::string(reinterpret_cast<const char*>(out.data), out.size);
      gnutls_free(out.data);
    } else {
      *detail = rc != 0 ? gnutls_strerror(rc) : "certificate not trusted";
    }
    return Verdict::kUntrusted;
  }
  return Verdict::kAccepted;
}

}  // namespace connmgr::quic
