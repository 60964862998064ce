//go:build !linux

package peer

// listenersNetlink: sock_diag is Linux only.
func listenersNetlink(port uint16) ([]Listener, error) { return nil, errNoNetlink }
