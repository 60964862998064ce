package cwapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestUpstreamOutcome(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{&APIError{StatusCode: 401, Code: 16}, "UNAUTHENTICATED"},
		{fmt.Errorf("wrapped: %w", &APIError{StatusCode: 503, Code: 14}), "UNAVAILABLE"},
		{&APIError{StatusCode: 404}, "http_4xx"},
		{&APIError{StatusCode: 502, Code: 99}, "http_5xx"},
		{&APIError{StatusCode: 302}, "http_3xx"},
		{&APIError{StatusCode: 600}, "http_other"},
		{fmt.Errorf("%w: x", ErrBadReply), "bad_reply"},
		{fmt.Errorf("p: %w", context.DeadlineExceeded), "timeout"},
		{&net.OpError{Op: "dial", Err: timeoutErr{}}, "timeout"},
		{fmt.Errorf("p: %w", context.Canceled), "canceled"},
		{errors.New("connection refused"), "network"},
	}
	for _, tt := range tests {
		if got := upstreamOutcome(tt.err); got != tt.want {
			t.Errorf("upstreamOutcome(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
