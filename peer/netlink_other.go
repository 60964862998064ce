//go:build !linux

package peer

import "net/netip"

// lookupNetlink: sock_diag is Linux only.
func lookupNetlink(local, remote netip.AddrPort) (uint32, error) { return 0, errNoNetlink }
