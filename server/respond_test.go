package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker"
)

func TestErrorStatus(t *testing.T) {
	unavailable := &broker.UnavailableError{Profile: "p", Err: context.DeadlineExceeded, RetryAt: time.Unix(1e9, 0)}
	tests := []struct {
		name   string
		err    error
		status int
		code   string
		msg    string
	}{
		{"unauthorized", errUnauthorized, 401, "Unauthorized", errUnauthorized.msg},
		{"forbidden host", errForbiddenHost, 403, "Forbidden", errForbiddenHost.msg},
		{"forbidden proxy", errForbiddenProxy, 403, "Forbidden", errForbiddenProxy.msg},
		{"not found", errNotFound, 404, "NotFound", errNotFound.msg},
		{"method", errMethodNotAllowed, 405, "MethodNotAllowed", errMethodNotAllowed.msg},
		{"unknown profile", fmt.Errorf("%w: %q", broker.ErrUnknownProfile, "p"), 404, "UnknownProfile", `unknown profile: "p"`},
		// The broker's own text, even though the cause is a context error.
		{"unavailable", fmt.Errorf("get key: %w", unavailable), 503, "NoValidKey", unavailable.Error()},
		{"bare no valid key", broker.ErrNoValidKey, 503, "NoValidKey", "no valid key"},
		{"canceled", fmt.Errorf("wait: %w", context.Canceled), 503, "NoValidKey", msgGaveUp},
		{"deadline", context.DeadlineExceeded, 503, "NoValidKey", msgGaveUp},
		{"panic", errPanic, 500, "InternalError", "internal error"},
		{"other", errors.New("secret detail"), 500, "InternalError", "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, msg := errorStatus(tt.err)
			if status != tt.status || code != tt.code || msg != tt.msg {
				t.Errorf("errorStatus(%v) = %d, %q, %q; want %d, %q, %q", tt.err, status, code, msg, tt.status, tt.code, tt.msg)
			}
		})
	}
}

func TestErrorBodyShape(t *testing.T) {
	s, _ := newTestServer(t, &fakeKeys{})
	rec := serve(s, request(http.MethodGet, "/nope"))
	want := `{"code":"NotFound","message":"no such endpoint","Code":"NotFound","Message":"no such endpoint"}`
	if got := rec.Body.String(); got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
}
