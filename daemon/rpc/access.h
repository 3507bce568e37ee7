// Who may call the methods that change state (docs/guide.md,
// "Permissions"): uid 0, the daemon's own uid, and members of the configured admin
// group, judged on the client's SO_PEERCRED credentials.
//
// Group membership counts the peer's primary gid and its supplementary
// groups: those the kernel reports for the socket (SO_PEERGROUPS, captured
// at accept), else /proc/PID/status "Groups:", else getgrouplist() of the
// uid's passwd entry. Plain functions; the lookups read /proc or NSS and are
// only made when the cheaper rules have not decided.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "rpc/method.h"

namespace connmgr::rpc {

struct AccessPolicy {
  uid_t daemon_uid = static_cast<uid_t>(-1);  // the daemon's geteuid()
  std::optional<gid_t> admin_gid;             // configuration `admin_group`
};

// The policy of this process: its effective uid, and `admin_gid`.
AccessPolicy process_access_policy(std::optional<gid_t> admin_gid);

// The decision on given credentials; `groups` are the peer's supplementary
// groups (pass the result of peer_groups(), or a list in tests).
bool may_change_state(const PeerCredentials& creds, const AccessPolicy& policy,
                      const std::vector<gid_t>& groups);

// The decision with the groups looked up as the header says.
bool may_change_state(const PeerCredentials& creds, const AccessPolicy& policy);

// The peer's supplementary groups: creds.groups when the kernel gave them,
// else /proc/PID/status, else getgrouplist(); empty if nothing answers.
std::vector<gid_t> peer_groups(const PeerCredentials& creds);

// "permission denied: METHOD changes state; uid U is not root, the daemon's
// user, or in admin group G" (or "... and no admin_group is configured").
std::string permission_denied_message(const std::string& method, const PeerCredentials& creds,
                                      const AccessPolicy& policy);

}  // namespace connmgr::rpc
