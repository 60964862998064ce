package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// TestPublicReasonNeverHoldsErrorText: whatever text an error carries
// (upstream's message, a proxy's CONNECT status line, a token file's
// content in a parse error), the published reason is a fixed phrase.
func TestPublicReasonNeverHoldsErrorText(t *testing.T) {
	const echo = "ECHOED-Q1ctU0VDUkVU"
	tests := []struct {
		name   string
		err    error
		want   string
		status int
		code   string
	}{
		{"401", &cwapi.APIError{StatusCode: 401, Code: 16, Message: echo}, "upstream answered HTTP 401 (UNAUTHENTICATED)", 401, "UNAUTHENTICATED"},
		{"403", &cwapi.APIError{StatusCode: 403, Code: 7, Message: echo}, "permission to mint keys", 403, "PERMISSION_DENIED"},
		{"429", &cwapi.APIError{StatusCode: 429, Message: echo}, "rate limiting", 429, ""},
		{"502 no code", &cwapi.APIError{StatusCode: 502, Message: echo}, "upstream answered HTTP 502", 502, ""},
		{"400 odd code", &cwapi.APIError{StatusCode: 400, Code: 99, Message: echo}, "HTTP 400 (code 99)", 400, "code 99"},
		{"proxy CONNECT refused", fmt.Errorf("/p: %w", &url.Error{Op: "Post", URL: "https://api", Err: errors.New(echo)}), "network or proxy error", 0, ""},
		{"connection refused", fmt.Errorf("/p: %w", &url.Error{Op: "Post", URL: "https://api", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}), "connection refused", 0, ""},
		{"dns", &url.Error{Err: &net.DNSError{Err: echo, Name: echo}}, "did not resolve", 0, ""},
		{"deadline", fmt.Errorf("%s: %w", echo, context.DeadlineExceeded), "in time", 0, ""},
		{"bad token", fmt.Errorf("%w: %s", cwapi.ErrBadToken, echo), "token file cannot be used", 0, ""},
		{"bad reply", fmt.Errorf("%w: %s", cwapi.ErrBadReply, echo), "malformed upstream reply", 0, ""},
		{"other", errors.New(echo), "minting a key failed", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			phrase, status, code := publicReason(tt.err)
			if !strings.Contains(phrase, tt.want) || status != tt.status || code != tt.code {
				t.Errorf("publicReason = %q, %d, %q; want it to say %q, %d, %q", phrase, status, code, tt.want, tt.status, tt.code)
			}
			ue := &UnavailableError{Profile: "p", Err: tt.err}
			for _, s := range []string{phrase, ue.Error()} {
				if strings.Contains(s, echo) {
					t.Errorf("published %q holds the error's text", s)
				}
			}
		})
	}
}
