package broker

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// budget is the cache's upstream mint budget (CacheOptions.UpstreamQPS):
// a token bucket shared by every mint, applying the order policy.go sets
// (a mint a client is waiting for takes the next token; background mints
// take one only while no client mint is queued, and not at all during a
// rateLimitPause). A nil limiter spends nothing (no budget), but a 429
// still pauses background mints.
type budget struct {
	lim *rate.Limiter
	now func() time.Time
	// clients counts client mints queued for a token.
	clients atomic.Int32
	// pausedUntil is when background mints may start again after a 429,
	// in unix nanoseconds (0: not paused).
	pausedUntil atomic.Int64
}

func newBudget(qps float64, now func() time.Time) *budget {
	b := &budget{now: now}
	if qps > 0 {
		b.lim = rate.NewLimiter(rate.Limit(qps), max(1, int(qps)))
	}
	return b
}

// wait returns when a mint may start, or with ctx's cause.
func (b *budget) wait(ctx context.Context, client bool) error {
	if client {
		if b.lim == nil {
			return nil
		}
		b.clients.Add(1)
		defer b.clients.Add(-1)
		if err := b.lim.Wait(ctx); err != nil {
			return waitError(ctx, err)
		}
		return nil
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var wait time.Duration
		if until := b.pausedUntil.Load(); until != 0 {
			wait = time.Unix(0, until).Sub(b.now())
		}
		if wait <= 0 && b.lim != nil {
			if b.clients.Load() > 0 {
				wait = backgroundPoll
			} else if r := b.lim.Reserve(); r.Delay() > 0 {
				wait = r.Delay()
				r.Cancel() // look again then: a client may come first
			}
		}
		if wait <= 0 {
			return nil
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-timer.C:
		}
	}
}

// waitError turns the limiter's refusal (the wait would outlast ctx's
// deadline, or ctx ended) into ctx's cause where there is one.
func waitError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return err
}

// pauseFor pauses background mints after a mint that failed with err for
// rateLimitPause(err); other outcomes change nothing.
func (b *budget) pauseFor(err error, now time.Time) {
	d := rateLimitPause(err)
	if d <= 0 {
		return
	}
	until := now.Add(d).UnixNano()
	for {
		cur := b.pausedUntil.Load()
		if cur >= until || b.pausedUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}
