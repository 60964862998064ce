package peer

// UseProcOnly makes Lookup skip netlink, as when AF_NETLINK is refused,
// until the returned function runs.
func UseProcOnly() (restore func()) {
	old := netlinkOff.Swap(true)
	return func() { netlinkOff.Store(old) }
}
