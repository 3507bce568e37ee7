#include "rpc/access.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace connmgr::rpc {

namespace {

// "Groups:\t4 24 27\n" of /proc/PID/status. False if the file is unreadable
// (the process is gone, or /proc is hidden from us).
bool proc_groups(pid_t pid, std::vector<gid_t>& out) {
  if (pid <= 0) return false;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(pid));
  FILE* f = fopen(path, "re");
  if (!f) return false;
  char line[4096];
  bool found = false;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "Groups:", 7) != 0) continue;
    found = true;
    char* p = line + 7;
    for (;;) {
      char* end = nullptr;
      const unsigned long g = strtoul(p, &end, 10);
      if (end == p) break;
      out.push_back(static_cast<gid_t>(g));
      p = end;
    }
    break;
  }
  fclose(f);
  return found;
}

bool passwd_groups(uid_t uid, std::vector<gid_t>& out) {
  long size = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<size_t>(size) : 16384);
  passwd pw{};
  passwd* found = nullptr;
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return false;
  int n = 32;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) return false;
  }
  groups.resize(static_cast<size_t>(n));
  out.insert(out.end(), groups.begin(), groups.end());
  return true;
}

}  // namespace

AccessPolicy process_access_policy(std::optional<gid_t> admin_gid) {
  return AccessPolicy{geteuid(), admin_gid};
}

bool may_change_state(const PeerCredentials& creds, const AccessPolicy& policy,
                      const std::vector<gid_t>& groups) {
  if (creds.uid == 0 || creds.uid == policy.daemon_uid) return true;
  if (!policy.admin_gid) return false;
  const gid_t admin = *policy.admin_gid;
  return creds.gid == admin || std::find(groups.begin(), groups.end(), admin) != groups.end();
}

bool may_change_state(const PeerCredentials& creds, const AccessPolicy& policy) {
  static const std::vector<gid_t> kNone;
  // The cheap rules first: most callers are root or the daemon's user.
  if (may_change_state(creds, policy, kNone)) return true;
  if (!policy.admin_gid || creds.uid == static_cast<uid_t>(-1)) return false;
  return may_change_state(creds, policy, peer_groups(creds));
}

std::vector<gid_t> peer_groups(const PeerCredentials& creds) {
  if (creds.groups_known) return creds.groups;
  std::vector<gid_t> out;
  if (proc_groups(creds.pid, out)) return out;
  out.clear();
  passwd_groups(creds.uid, out);
  return out;
}

std::string permission_denied_message(const std::string& method, const PeerCredentials& creds,
                                      const AccessPolicy& policy) {
  std::string m = "permission denied: " + method + " changes state; uid " + std::to_string(creds.uid);
  if (policy.admin_gid)
    m += " is not root, the daemon's user, or in admin group " + std::to_string(*policy.admin_gid);
  else
    m += " is not root or the daemon's user, and no admin_group is configured";
  return m;
}

}  // namespace connmgr::rpc
