// Writes the example configuration file (every key, commented out, with its
// system default) on stdout; run at build time.
#include <cstdio>

#include "config/config.h"

int main() {
  const std::string text = connmgr::config::sample_file_text();
  return fwrite(text.data(), 1, text.size(), stdout) == text.size() ? 0 : 1;
}
