package main

import (
	"context"
	"errors"
	"io"
)

// revokeCmd is not implemented yet.
func revokeCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	return errors.New("not implemented yet")
}
