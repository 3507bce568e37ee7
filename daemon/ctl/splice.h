// What `connmgrctl pipe` and `connmgrctl exec` do with a stream once
// streams.open has answered: the socket to connmgrd is then a raw byte pipe
// to the node (client.h's open_stream()).
#pragma once

#include <string>
#include <vector>

namespace connmgr::ctl {

// Joins stdin -> `sock` and `sock` -> stdout until both directions end:
// stdin's EOF becomes shutdown(SHUT_WR) on the socket, the socket's EOF
// closes stdout. Returns 0 once both have ended; prints why and returns 1
// when the stream is reset or closed by connmgrd while stdin still goes on
// (the node reset it, the link was lost, the node was disconnected). Once
// stdin has ended, a reset looks like the stream's end: connmgrd closes the
// connection either way.
int join_stdio(int sock);

// Runs `command` (execvp) with `sock` as its stdin and stdout; returns only
// when it cannot be run (message on stderr), with 127 (not found) or 126.
int exec_on(int sock, const std::vector<std::string>& command);

}  // namespace connmgr::ctl
