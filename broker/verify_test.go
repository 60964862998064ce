package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// s3Error is an S3 error answer, as s3check.Error presents it.
type s3Error struct {
	status int
	code   string
}

func (e *s3Error) Error() string       { return fmt.Sprintf("HTTP %d %s", e.status, e.code) }
func (e *s3Error) S3ErrorCode() string { return e.code }
func (e *s3Error) HTTPStatus() int     { return e.status }

// fakeS3 is a KeyVerifier with S3's behaviours: a key is refused with
// InvalidAccessKeyId until propagation has passed since S3 first saw it;
// answer, if set, decides instead (nil: accept). It records when it first
// accepted each key.
type fakeS3 struct {
	mu          sync.Mutex
	propagation time.Duration
	answer      func(ctx context.Context, key *cwapi.Credentials) error
	firstSeen   map[string]time.Time
	accepted    map[string]time.Time
	calls       int
}

func (s *fakeS3) Check(ctx context.Context, key *cwapi.Credentials) error {
	s.mu.Lock()
	s.calls++
	if s.firstSeen == nil {
		s.firstSeen, s.accepted = map[string]time.Time{}, map[string]time.Time{}
	}
	if _, ok := s.firstSeen[key.AccessKeyID]; !ok {
		s.firstSeen[key.AccessKeyID] = time.Now()
	}
	answer, born := s.answer, s.firstSeen[key.AccessKeyID]
	propagating := time.Since(born) < s.propagation
	s.mu.Unlock()
	var err error
	switch {
	case answer != nil:
		err = answer(ctx, key)
	case propagating:
		err = &s3Error{403, "InvalidAccessKeyId"}
	}
	if err == nil {
		s.mu.Lock()
		if _, ok := s.accepted[key.AccessKeyID]; !ok {
			s.accepted[key.AccessKeyID] = time.Now()
		}
		s.mu.Unlock()
	}
	return err
}

func (s *fakeS3) acceptedAt(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.accepted[id]
	return t, ok
}

func (p *countingProfile) KeyChecked(verdict string, _ time.Duration) {
	p.o.add(p.name, "check_"+verdict)
}

func newCheckedCache(t *testing.T, m cwapi.Minter, s3 KeyVerifier, logs *logLines, obs Observer) *Cache {
	t.Helper()
	c, err := NewCache([]CacheProfile{{Name: "p", Source: cwapi.SourceAccessKey, Minter: m}},
		func(o *CacheOptions) {
			o.Rand = func() float64 { return 0 }
			o.Verifier = s3
			o.KeyWarmup = 5 * time.Second // replaced by the check
			if logs != nil {
				o.Logger = zerolog.New(logs)
			}
			if obs != nil {
				o.Observer = obs
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheckColdClientWaitsUntilAccepted: a cold client waits for the mint
// and then for S3 to accept the key (a 1.2 s propagation delay), and gets
// it the moment S3 accepts it, within VerifyColdWait.
func TestCheckColdClientWaitsUntilAccepted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s3 := &fakeS3{propagation: 1200 * time.Millisecond}
		obs := &countingObserver{}
		c := newCheckedCache(t, &fakeMinter{lifetime: time.Hour, latency: 100 * time.Millisecond}, s3, nil, obs)
		start := time.Now()
		k := mustGet(t, c, "p")
		took := time.Since(start)
		at, ok := s3.acceptedAt(k.AccessKeyID)
		if !ok || !at.Equal(time.Now()) {
			t.Fatalf("key served at %s, S3 accepted it at %v (%v); want served when accepted", time.Now(), at, ok)
		}
		if took < 1300*time.Millisecond || took > 100*time.Millisecond+VerifyColdWait {
			t.Errorf("cold Get took %s, want after the 1.2s propagation and within the mint + %s", took, VerifyColdWait)
		}
		synctest.Wait()
		st := c.Status()[0]
		if !st.Healthy || st.S3Check != "accepted" || st.S3ErrorCode != "" || st.S3CheckedAt == nil || !st.S3CheckedAt.Equal(at) {
			t.Errorf("Status = %+v, want healthy, accepted at %s with no error code", st, at)
		}
		if got := obs.get("p")["check_accepted"]; got != 1 {
			t.Errorf("check_accepted observed %d times, want 1", got)
		}
	})
}

// TestCheckColdBoundWhenS3KeepsRefusing: S3 answers InvalidAccessKeyId
// for ever. Cold clients (including one arriving during the hold) get the
// key exactly VerifyColdWait after it arrived, no later; the check goes on
// and, at VerifyPropagationLimit, reports the key refused in Status, the
// observer and an error log line naming the S3 code.
func TestCheckColdBoundWhenS3KeepsRefusing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s3 := &fakeS3{propagation: 24 * time.Hour}
		logs := &logLines{}
		obs := &countingObserver{}
		m := &fakeMinter{lifetime: time.Hour, latency: 100 * time.Millisecond}
		c := newCheckedCache(t, m, s3, logs, obs)
		arrived := time.Now().Add(100 * time.Millisecond)
		late := make(chan time.Time)
		go func() {
			time.Sleep(time.Second) // a second client, during the hold
			mustGet(t, c, "p")
			late <- time.Now()
		}()
		mustGet(t, c, "p")
		if got := time.Now(); !got.Equal(arrived.Add(VerifyColdWait)) {
			t.Errorf("cold Get returned at +%s, want the key's arrival + %s", got.Sub(arrived), VerifyColdWait)
		}
		if got := <-late; !got.Equal(arrived.Add(VerifyColdWait)) {
			t.Errorf("a client arriving during the hold got the key at +%s, want the same bound", got.Sub(arrived))
		}
		if m.count() != 1 {
			t.Errorf("mints = %d, want 1: a held key is not re-minted", m.count())
		}
		if st := c.Status()[0]; !st.Healthy || st.S3Check != "checking" {
			t.Errorf("Status after the hold = %+v, want healthy and still checking", st)
		}
		time.Sleep(time.Until(arrived.Add(VerifyPropagationLimit)))
		synctest.Wait()
		st := c.Status()[0]
		if !st.Healthy || st.S3Check != "refused" || st.S3ErrorCode != "InvalidAccessKeyId" || st.S3HTTPStatus != 403 {
			t.Errorf("Status after the limit = %+v, want still served, refused with InvalidAccessKeyId", st)
		}
		lines := logs.events(t, "key_refused")
		if len(lines) != 1 || lines[0]["level"] != "error" || lines[0]["s3_error_code"] != "InvalidAccessKeyId" {
			t.Errorf("key_refused lines = %v, want one error line naming InvalidAccessKeyId", lines)
		}
		if got := obs.get("p")["check_refused"]; got != 1 {
			t.Errorf("check_refused observed %d times, want 1", got)
		}
	})
}

// TestCheckRefreshSwapsOnceAccepted: after a background refresh the
// previous key is served until S3 accepts the new one (3 s), not for the
// fixed warm-up, and Status shows the new key warming meanwhile.
func TestCheckRefreshSwapsOnceAccepted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s3 := &fakeS3{propagation: 3 * time.Second}
		m := &fakeMinter{lifetime: time.Hour, latency: time.Second}
		c := newCheckedCache(t, m, s3, nil, nil)
		stop := startRun(c)
		defer stop()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		first := mustGet(t, c, "p")
		if _, ok := s3.acceptedAt(first.AccessKeyID); !ok {
			t.Fatalf("first key %s not accepted after 10s", first.AccessKeyID)
		}
		// The refresh starts 40 min after the first key arrived (at 1s).
		obtained := time.Now().Add(40*time.Minute + time.Second - 10*time.Second + time.Second)
		time.Sleep(time.Until(obtained))
		synctest.Wait()
		if m.count() != 2 {
			t.Fatalf("mints = %d, want 2", m.count())
		}
		var second string
		for time.Now().Before(obtained.Add(10 * time.Second)) {
			k := mustGet(t, c, "p")
			st := c.Status()[0]
			if st.WarmingAccessKeyID != "" {
				second = st.WarmingAccessKeyID
			}
			at, accepted := s3.acceptedAt(second)
			switch {
			case second == "":
				t.Fatalf("no key warming right after the refresh: %+v", st)
			case !accepted && k != first:
				t.Fatalf("at +%s served %s before S3 accepted the new key", time.Since(obtained), k.AccessKeyID)
			case accepted && k.AccessKeyID != second:
				t.Fatalf("at +%s (accepted at +%s) still served the previous key", time.Since(obtained), at.Sub(obtained))
			}
			time.Sleep(100 * time.Millisecond)
		}
		at, _ := s3.acceptedAt(second)
		if d := at.Sub(obtained); d < 3*time.Second || d > 5*time.Second {
			t.Errorf("new key accepted %s after it arrived, want just after the 3s propagation", d)
		}
	})
}

// TestCheckRefusedKeyReported: S3 answers AccessDenied (not propagation):
// a cold key is served at once, without waiting out the hold, and the
// refusal shows in Status and an error log line; on refresh the previous
// key, which S3 took, stays served to its own serve limit.
func TestCheckRefusedKeyReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		refuse := ""
		s3 := &fakeS3{answer: func(context.Context, *cwapi.Credentials) error {
			mu.Lock()
			defer mu.Unlock()
			if refuse == "" {
				return nil
			}
			return &s3Error{403, refuse}
		}}
		setRefuse := func(code string) { mu.Lock(); refuse = code; mu.Unlock() }
		logs := &logLines{}
		m := &fakeMinter{lifetime: time.Hour}
		c := newCheckedCache(t, m, s3, logs, nil)
		setRefuse("AccessDenied")
		start := time.Now()
		mustGet(t, c, "p")
		if d := time.Since(start); d != 0 {
			t.Errorf("cold Get of a refused key took %s, want at once", d)
		}
		synctest.Wait()
		st := c.Status()[0]
		if !st.Healthy || st.S3Check != "refused" || st.S3ErrorCode != "AccessDenied" {
			t.Errorf("Status = %+v, want served and refused with AccessDenied", st)
		}
		lines := logs.events(t, "key_refused")
		if len(lines) != 1 || lines[0]["level"] != "error" || lines[0]["s3_error_code"] != "AccessDenied" || lines[0]["action_needed"] == "" {
			t.Errorf("key_refused lines = %v, want one error line naming AccessDenied with an action", lines)
		}

		// Refresh: the first key (now accepted) against a refused second.
		setRefuse("")
		c2 := newCheckedCache(t, m, s3, nil, nil)
		stop := startRun(c2)
		defer stop()
		synctest.Wait()
		first := mustGet(t, c2, "p")
		setRefuse("SignatureDoesNotMatch")
		time.Sleep(41 * time.Minute)
		synctest.Wait()
		if k := mustGet(t, c2, "p"); k != first {
			t.Fatalf("after a refused refresh served %s, want the previous key %s", k.AccessKeyID, first.AccessKeyID)
		}
		st = c2.Status()[0]
		if st.S3Check != "refused" || st.S3ErrorCode != "SignatureDoesNotMatch" || st.WarmingAccessKeyID == "" {
			t.Errorf("Status = %+v, want the new key warming, refused with SignatureDoesNotMatch", st)
		}
		// The previous key's serve limit: 1 min before it expires.
		time.Sleep(time.Until(first.Expires.Add(-ServeMargin)) - time.Nanosecond)
		if k := mustGet(t, c2, "p"); k != first {
			t.Errorf("just before its serve limit served %s, want the previous key", k.AccessKeyID)
		}
		time.Sleep(time.Nanosecond)
		if k := mustGet(t, c2, "p"); k == first || k.AccessKeyID != st.WarmingAccessKeyID {
			t.Errorf("at the previous key's serve limit served %s, want the new key %s", k.AccessKeyID, st.WarmingAccessKeyID)
		}
	})
}

// TestCheckUnreachableS3NeverBlocksPastTheBound: an S3 endpoint that never
// answers (each request hangs until its timeout) holds a cold key back
// exactly VerifyColdWait, and a refresh's swap at most
// VerifyPropagationLimit; the verdict is "unanswered".
func TestCheckUnreachableS3NeverBlocksPastTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s3 := &fakeS3{answer: func(ctx context.Context, _ *cwapi.Credentials) error {
			<-ctx.Done()
			return fmt.Errorf("dial tcp 10.0.0.1:443: %w", ctx.Err())
		}}
		logs := &logLines{}
		obs := &countingObserver{}
		m := &fakeMinter{lifetime: time.Hour, latency: 100 * time.Millisecond}
		c := newCheckedCache(t, m, s3, logs, obs)
		stop := startRun(c)
		defer stop()
		start := time.Now()
		first := mustGet(t, c, "p")
		if d := time.Since(start); d != 100*time.Millisecond+VerifyColdWait {
			t.Errorf("cold Get took %s, want the mint + %s", d, VerifyColdWait)
		}
		time.Sleep(VerifyPropagationLimit)
		synctest.Wait()
		if st := c.Status()[0]; st.S3Check != "unanswered" || !st.Healthy {
			t.Errorf("Status = %+v, want healthy and unanswered", st)
		}
		if got := len(logs.events(t, "key_check_unanswered")); got != 1 {
			t.Errorf("key_check_unanswered lines = %d, want 1", got)
		}
		// Refresh: 40 min after the first key arrived.
		obtained := start.Add(100*time.Millisecond + 40*time.Minute + 100*time.Millisecond)
		time.Sleep(time.Until(obtained))
		synctest.Wait()
		time.Sleep(VerifyPropagationLimit - time.Nanosecond)
		if k := mustGet(t, c, "p"); k != first {
			t.Errorf("before the limit served %s, want the previous key", k.AccessKeyID)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if k := mustGet(t, c, "p"); k == first {
			t.Errorf("at the limit still served the previous key; an unreachable S3 must not hold it longer")
		}
		if got := obs.get("p")["check_unanswered"]; got != 2 {
			t.Errorf("check_unanswered observed %d times, want 2", got)
		}
	})
}
