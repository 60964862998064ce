// Package peer finds the local user behind a loopback TCP connection: the
// uid that owns the client's socket, and that user's groups.
//
// The daemon sees only the server side of a connection. The client's socket
// is the one whose local address is the server side's remote address and
// whose remote address is the server side's local address; its owner is the
// uid that created it (for a process that changed uid afterwards, the uid at
// socket creation).
//
// # How
//
// Lookup asks the kernel first through NETLINK_SOCK_DIAG (an inet_diag
// request for exactly that 4-tuple: one round trip, independent of how many
// sockets the node has). When netlink is unavailable (a seccomp or
// RestrictAddressFamilies= policy without AF_NETLINK) it falls back, for the
// rest of the process's life, to scanning /proc/self/net/tcp and tcp6, which
// costs time proportional to the number of TCP sockets in the network
// namespace. Both work under systemd's ProtectProc=invisible and
// ProcSubset=pid.
//
// IPv4 peers, including IPv4-mapped IPv6 addresses (a dual-stack listener),
// are looked up in both tables: a client may use an AF_INET socket, or an
// AF_INET6 socket connected to ::ffff:127.0.0.1.
//
// # What it does not give
//
// The pid: the kernel's socket tables hold the owner's uid and the socket's
// inode, and mapping an inode to a process means reading every
// /proc/<pid>/fd, which is slow and, under ProtectProc=invisible, impossible.
// So the groups are not the process's own: Groups returns the uid's primary
// group and its supplementary groups from the user database (os/user). A
// process that dropped or gained groups after login (newgrp, setgroups, a
// container runtime's --group-add) is judged by the database, not by its
// real credentials.
//
// # Per connection
//
// ConnContext (for http.Server.ConnContext) attaches a *Conn to each
// connection's context. A Conn resolves its uid at most once, on first use
// (a socket's owner never changes), so keep-alive clients pay once per
// connection and connections nobody asks about pay nothing but the
// allocation. Groups are not cached here: group membership changes while a
// connection lives, so the server (server.GroupsTTL) caches them per uid
// for a few seconds and forgets them at every reload.
package peer
