// Command cwcreds is a node-local credential broker for CoreWeave AI Object
// Storage: it holds upstream tokens, mints and caches Object Storage keys
// per profile, and serves them to any AWS SDK on the container-credentials
// endpoint.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on stderr and maps it to the process exit status:
// 0 success, 2 usage or configuration errors, 1 anything else.
func exitCode(err error, stderr *os.File) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "cwcreds: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}
