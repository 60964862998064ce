package metrics

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/idtoken"
)

// The reason label of a refused workload token is one of a fixed set.
func TestTokenReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("profile pods: %w", broker.ErrTooManyPendingTokens), "too_many_pending"},
		{fmt.Errorf("%w at 2026-12-06T07:00:00Z", broker.ErrTokenExpired), string(idtoken.ReasonExpired)},
		{errors.New("something else"), "other"},
	} {
		if got := tokenReason(tc.err); got != tc.want {
			t.Errorf("tokenReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
