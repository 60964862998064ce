//go:build ignore

// bindtry ADDR SECONDS [STOPFILE] polls bind(ADDR) every millisecond for
// SECONDS, or until STOPFILE exists, and prints how each attempt failed
// and which ended it (until=stopfile or until=deadline); it exits 1 if it
// ever bound ADDR.
// scripts/systemd-live-test runs it as an unprivileged user (and as root)
// during `systemctl restart cwcreds`.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	secs, _ := strconv.ParseFloat(os.Args[2], 64)
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	stopFile := ""
	if len(os.Args) > 3 {
		stopFile = os.Args[3]
	}
	var n, inuse, denied, other, bound int
	until := "deadline"
	for time.Now().Before(end) {
		if stopFile != "" {
			if _, err := os.Stat(stopFile); err == nil {
				until = "stopfile"
				break
			}
		}
		n++
		ln, err := net.Listen("tcp", os.Args[1])
		switch {
		case err == nil:
			bound++
			ln.Close()
		case errors.Is(err, syscall.EADDRINUSE):
			inuse++
		case errors.Is(err, syscall.EACCES):
			denied++
		default:
			other++
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("attempts=%d eaddrinuse=%d eacces=%d other=%d bound=%d until=%s\n", n, inuse, denied, other, bound, until)
	if bound > 0 {
		os.Exit(1)
	}
}
