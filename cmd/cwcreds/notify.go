package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/cwcreds/cwcreds/broker"
)

// statusPollInterval is how often serve compares the profiles' readiness
// with the STATUS= systemd shows; it sends a new one only on a change.
const statusPollInterval = time.Second

// maxStatusRunes keeps STATUS= to what `systemctl status` shows on one line.
const maxStatusRunes = 200

// notifySender sends one sd_notify message (newline-separated
// VARIABLE=value assignments) to the service manager.
type notifySender func(state string) error

// sdNotify sends state to $NOTIFY_SOCKET.
func sdNotify(state string) error {
	_, err := sdnotify.SdNotify(false, state)
	return err
}

// notifier speaks the sd_notify protocol to the service manager (systemd
// Type=notify, see systemd/cwcreds.service) for serve:
//
//   - start sends READY=1 with the first STATUS=, so `systemctl start`
//     returns only once clients can connect (before any key is minted:
//     clients then get fast, explained 503s);
//   - while serve's context lives it keeps STATUS= true to the profiles'
//     readiness ("2/3 profiles ready on 127.0.0.1:7911; "ingest" has no
//     valid key: ..."), sending it only when the text changes, and feeds
//     the watchdog (WATCHDOG=1) at half the interval systemd asks for when
//     the unit sets WatchdogSec=;
//   - reloading and ready frame a configuration reload (RELOADING=1 with
//     MONOTONIC_USEC=, as Type=notify-reload wants, then READY=1);
//   - when the context ends (SIGTERM, SIGINT) it sends STOPPING=1 at once,
//     before serve drains in-flight requests.
//
// A nil send (not started by systemd, or Type= is not notify) makes every
// method a no-op. A failure to notify is logged once per episode, never
// fatal: the daemon serves either way, and systemd reports a missing
// READY=1 itself. Its methods are safe for concurrent use.
type notifier struct {
	log  zerolog.Logger
	send notifySender

	mu      sync.Mutex // guards the fields below, and orders messages
	failing bool
	status  string // the last STATUS= sent
	stopped bool   // STOPPING=1 was sent: no STATUS= may follow
}

// newNotifier returns serve's notifier: through send when it is not nil,
// else through $NOTIFY_SOCKET when systemd set it, else disabled.
func newNotifier(log zerolog.Logger, send notifySender) *notifier {
	if send == nil && os.Getenv("NOTIFY_SOCKET") != "" {
		send = sdNotify
	}
	return &notifier{log: log, send: send}
}

// start sends READY=1 with status() as STATUS=, then, from goroutines that
// live as long as ctx, feeds the watchdog (watchdog is systemd's
// WatchdogSec; 0 disables it) and re-reads status() every poll, sending it
// when it changed. When ctx ends it sends STOPPING=1. The returned function
// ends the goroutines (sending STOPPING=1 if ctx has not ended yet, e.g.
// when serve fails) and waits for them; serve defers it.
func (n *notifier) start(ctx context.Context, status func() string, watchdog, poll time.Duration) (stop func()) {
	if n.send == nil {
		return func() {}
	}
	n.ready(status())
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { n.watchStatus(ctx, status, poll) })
	wg.Go(func() { n.run(ctx, watchdog) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// watchdogInterval is systemd's WatchdogSec for this process, or 0.
func watchdogInterval(log zerolog.Logger) time.Duration {
	interval, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn().Err(err).Msg("systemd watchdog settings unusable; not feeding the watchdog")
		return 0
	}
	return interval
}

// run feeds the watchdog every interval/2 (never, if interval is 0) until
// ctx ends, then sends STOPPING=1.
func (n *notifier) run(ctx context.Context, interval time.Duration) {
	var tick <-chan time.Time
	if interval > 0 {
		n.log.Debug().Dur("interval", interval).Msg("feeding the systemd watchdog")
		n.notify("watchdog", sdnotify.SdNotifyWatchdog)
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			n.notify("watchdog", sdnotify.SdNotifyWatchdog)
		case <-ctx.Done():
			n.stopping()
			return
		}
	}
}

// watchStatus sends status() as STATUS= every poll when it differs from
// the last STATUS= sent, until ctx ends.
func (n *notifier) watchStatus(ctx context.Context, status func() string, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			n.setStatus(status())
		case <-ctx.Done():
			return
		}
	}
}

// setStatus sends STATUS=status unless it is the last one sent.
func (n *notifier) setStatus(status string) {
	if n.send == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if status == n.status || n.stopped {
		return
	}
	n.sendLocked("status", "STATUS="+status, status)
}

// ready sends READY=1 with STATUS=status: at start, and when a reload is
// done.
func (n *notifier) ready(status string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked("ready", sdnotify.SdNotifyReady+"\nSTATUS="+status, status)
}

// reloading tells systemd a reload began at started, a CLOCK_MONOTONIC
// reading in microseconds (RELOADING=1 needs MONOTONIC_USEC= under
// Type=notify-reload); ready says when it is done.
func (n *notifier) reloading(started int64) {
	const status = "reloading the configuration"
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked("reloading", fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=%s", started, status), status)
}

// stopping sends STOPPING=1; no STATUS= change follows it.
func (n *notifier) stopping() {
	const status = "shutting down: draining requests"
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	n.sendLocked("stopping", sdnotify.SdNotifyStopping+"\nSTATUS="+status, status)
}

// notify sends state, which leaves STATUS= as it was.
func (n *notifier) notify(what, state string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked(what, state, n.status)
}

// sendLocked sends state, which makes status the STATUS= systemd shows.
// The log field is "notify", not "message": zerolog's Msg writes
// "message", and one JSON object must not hold a key twice.
func (n *notifier) sendLocked(what, state, status string) {
	if n.send == nil {
		return
	}
	err := n.send(state)
	switch {
	case err != nil && !n.failing:
		n.log.Warn().Err(err).Str("notify", what).Msg("cannot notify systemd (NOTIFY_SOCKET)")
	case err == nil && n.failing:
		n.log.Info().Str("notify", what).Msg("notifying systemd works again")
	case err == nil && what != "watchdog":
		n.log.Debug().Str("notify", what).Msg("notified systemd")
	}
	n.failing = err != nil
	if err == nil {
		n.status = status
	}
}

// readinessStatus is the STATUS= line for profiles served on addr:
// "N/M profiles ready on ADDR", and when some are not, the first failing
// profile's name and reason (broker.Status.Reason, which holds no secret),
// on one line of at most maxStatusRunes.
func readinessStatus(addr string, profiles []broker.Status) string {
	ready := 0
	var first *broker.Status
	for i := range profiles {
		if profiles[i].Healthy {
			ready++
		} else if first == nil {
			first = &profiles[i]
		}
	}
	s := fmt.Sprintf("%d/%d profiles ready on %s", ready, len(profiles), addr)
	if first != nil {
		reason := first.Reason
		if reason == "" {
			reason = "not ready"
		}
		// Reasons from broker.UnavailableError name the profile already.
		name := fmt.Sprintf("%q", first.Profile)
		if rest, ok := strings.CutPrefix(reason, "profile "+name+" "); ok {
			s += "; " + name + " " + rest
		} else {
			s += "; " + name + ": " + reason
		}
	}
	return truncate(strings.Join(strings.Fields(s), " "), maxStatusRunes)
}

// monotonicUsec reads CLOCK_MONOTONIC in microseconds, the clock systemd's
// MONOTONIC_USEC= and the reload handshake (reload.json) use: it is the same
// for every process on the host and never jumps.
func monotonicUsec() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	return ts.Nano() / 1_000, nil
}
