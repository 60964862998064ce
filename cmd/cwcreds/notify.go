package main

import (
	"context"
	"os"
	"sync"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
)

// notifySystemd speaks the sd_notify protocol to the service manager
// (systemd Type=notify, see systemd/cwcreds.service). serve calls it once
// the listener accepts connections:
//
//   - it sends READY=1 with status as STATUS=, so `systemctl start` returns
//     only once clients can connect;
//   - when the unit sets WatchdogSec=, it feeds the watchdog (WATCHDOG=1)
//     at half the interval systemd asks for, from one goroutine that lives
//     as long as ctx;
//   - when ctx ends (SIGTERM, SIGINT) it sends STOPPING=1 at once, before
//     serve drains in-flight requests.
//
// The returned function ends the goroutine (sending STOPPING=1 if ctx has
// not ended yet, e.g. when serve fails) and waits for it; serve defers it.
//
// Without NOTIFY_SOCKET (not started by systemd, or Type= is not notify)
// it does nothing. A failure to notify is logged, never fatal: the daemon
// serves either way, and systemd reports a missing READY=1 itself.
func notifySystemd(ctx context.Context, log zerolog.Logger, status string) (stop func()) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return func() {}
	}
	n := &notifier{log: log}
	n.send("ready", sdnotify.SdNotifyReady+"\nSTATUS="+status)

	interval, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn().Err(err).Msg("systemd watchdog settings unusable; not feeding the watchdog")
		interval = 0
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { n.run(ctx, interval) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// notifier sends sd_notify messages and logs failures once per episode,
// so a vanished socket does not log at every watchdog tick.
type notifier struct {
	log     zerolog.Logger
	failing bool
}

// run feeds the watchdog every interval/2 (never, if interval is 0) until
// ctx ends, then sends STOPPING=1.
func (n *notifier) run(ctx context.Context, interval time.Duration) {
	var tick <-chan time.Time
	if interval > 0 {
		n.log.Debug().Dur("interval", interval).Msg("feeding the systemd watchdog")
		n.send("watchdog", sdnotify.SdNotifyWatchdog)
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			n.send("watchdog", sdnotify.SdNotifyWatchdog)
		case <-ctx.Done():
			n.send("stopping", sdnotify.SdNotifyStopping+"\nSTATUS=shutting down: draining requests")
			return
		}
	}
}

func (n *notifier) send(what, state string) {
	_, err := sdnotify.SdNotify(false, state)
	switch {
	case err != nil && !n.failing:
		n.log.Warn().Err(err).Str("message", what).Msg("cannot notify systemd (NOTIFY_SOCKET)")
	case err == nil && n.failing:
		n.log.Info().Msg("notifying systemd works again")
	case err == nil && what != "watchdog":
		n.log.Debug().Str("message", what).Msg("notified systemd")
	}
	n.failing = err != nil
}
