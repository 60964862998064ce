package main

import (
	"fmt"

	"github.com/cwcreds/cwcreds/server"
)

// checkRuntimeDir opens the daemon's runtime directory (CWCREDS_RUNTIME_DIR,
// systemd's RuntimeDirectory=), creating it (0750) if missing, and refuses
// it unless it is owned by the daemon's user or root and writable by no one
// else: whoever can write it can plant the client and admin token files
// the daemon reads back (server.ErrUnsafePath). The check is made on the
// opened directory; the caller creates files through the returned handle
// and closes it.
func checkRuntimeDir(path string) (*server.TokenDir, error) {
	d, err := server.OpenTokenDir(path, true)
	if err != nil {
		return nil, fmt.Errorf("runtime directory (CWCREDS_RUNTIME_DIR, else systemd's $RUNTIME_DIRECTORY): %w", err)
	}
	return d, nil
}
