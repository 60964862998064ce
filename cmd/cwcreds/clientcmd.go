package main

import (
	"context"
	"errors"
	"io"
)

// credentialProcessCmd is not implemented yet.
func credentialProcessCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	return errors.New("not implemented yet")
}

// envCmd is not implemented yet.
func envCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	return errors.New("not implemented yet")
}
