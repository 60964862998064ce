package main

import (
	"context"
	"errors"
	"io"
)

// statusCmd is not implemented yet.
func statusCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	return errors.New("not implemented yet")
}
