package peer

import (
	"os"
	"testing"
)

// The cost of identifying one connection's peer, paid once per connection.

func BenchmarkLookupNetlink(b *testing.B) {
	srv, _ := pair(b, "tcp4", "127.0.0.1:0")
	local, remote := ends(srv)
	for b.Loop() {
		if _, err := lookupNetlink(local, remote); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupNetlinkIPv6(b *testing.B) {
	srv, _ := pair(b, "tcp6", "[::1]:0")
	local, remote := ends(srv)
	for b.Loop() {
		if _, err := lookupNetlink(local, remote); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupProc scans /proc/self/net/tcp: its cost grows with the
// number of TCP sockets in the namespace (reported as sockets).
func BenchmarkLookupProc(b *testing.B) {
	srv, _ := pair(b, "tcp4", "127.0.0.1:0")
	local, remote := ends(srv)
	data, _ := os.ReadFile("/proc/self/net/tcp")
	n := 0
	for _, c := range data {
		if c == '\n' {
			n++
		}
	}
	for b.Loop() {
		if _, err := LookupProc("/proc/self/net", local, remote); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n-1), "sockets")
}

func BenchmarkGroups(b *testing.B) {
	uid := uint32(os.Getuid())
	for b.Loop() {
		if _, err := Groups(uid); err != nil {
			b.Fatal(err)
		}
	}
}
