package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// squatterUID is the uid the squatter runs as: nobody.
const squatterUID = 65534

// TestSquatterProcess is the squatter's body when the test binary runs as
// one (CWCREDS_TEST_SQUATTER=1): it listens on 127.0.0.1:0, prints the
// address, then counts every byte any connection sends and prints the total
// when its stdin closes.
func TestSquatterProcess(t *testing.T) {
	if os.Getenv("CWCREDS_TEST_SQUATTER") != "1" {
		t.Skip("only runs as the squatter helper")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	got := make(chan int64, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				got <- n
			}()
		}
	}()
	io.Copy(io.Discard, os.Stdin)
	time.Sleep(200 * time.Millisecond) // let readers finish
	var total int64
	for len(got) > 0 {
		total += <-got
	}
	fmt.Println("RECEIVED", total)
	os.Exit(0)
}

// squatter is a process of another user (nobody) listening on a loopback
// port, as a local attacker who took the daemon's port would.
type squatter struct {
	addr  string
	stdin io.WriteCloser
	out   *bufio.Reader
	cmd   *exec.Cmd
}

func startSquatter(t *testing.T) *squatter {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the squatter as another user (CI runs as root)")
	}
	// The test binary, copied where nobody may run it.
	dir, err := os.MkdirTemp("", "cwcreds-squatter")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "squatter")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestSquatterProcess$")
	cmd.Env = []string{"CWCREDS_TEST_SQUATTER=1", "PATH=/usr/bin:/bin"}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: squatterUID, Gid: squatterUID}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &squatter{stdin: stdin, out: bufio.NewReader(stdout), cmd: cmd}
	line, err := s.out.ReadString('\n')
	if err != nil || strings.HasPrefix(line, "ERROR") {
		t.Fatalf("squatter did not start: %q %v", line, err)
	}
	s.addr = strings.TrimSpace(line)
	return s
}

// received stops the squatter and returns how many bytes it was sent.
func (s *squatter) received(t *testing.T) string {
	t.Helper()
	s.stdin.Close()
	for {
		line, err := s.out.ReadString('\n')
		if strings.HasPrefix(line, "RECEIVED ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "RECEIVED "))
		}
		if err != nil {
			t.Fatalf("squatter ended without a count: %v", err)
		}
	}
}

// TestClientCommandsRefuseSquatter: a process of another user listening on
// the daemon's address gets nothing from status, revoke, env or
// credential-process: each checks the listening socket's owner before
// sending any token, and fails saying who holds the port.
func TestClientCommandsRefuseSquatter(t *testing.T) {
	dir := t.TempDir() // root-owned: the daemon's runtime directory
	token := filepath.Join(dir, "train.token")
	admin := filepath.Join(dir, "admin-token")
	for _, p := range []string{token, admin} {
		if err := os.WriteFile(p, []byte("cwc-"+strings.Repeat("a", 43)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clearEnv(t, "CWCREDS_")
	t.Setenv("CWCREDS_RUNTIME_DIR", dir)
	for _, tc := range []struct {
		name string
		run  func(addr string) error
	}{
		{"status", func(addr string) error {
			return statusCmd(context.Background(), []string{"--addr", addr}, os.Environ(), io.Discard, io.Discard)
		}},
		{"revoke", func(addr string) error {
			var out strings.Builder // revoke reports each profile's failure on stdout
			err := revokeCmd(context.Background(), []string{"--addr", addr, "--profile", "train", "--admin-token-file", admin}, os.Environ(), &out, io.Discard)
			if err != nil {
				err = fmt.Errorf("%w\n%s", err, out.String())
			}
			return err
		}},
		{"credential-process", func(addr string) error {
			return credentialProcessCmd(context.Background(), []string{"--addr", addr, "--profile", "train", "--token-file", token}, os.Environ(), io.Discard, io.Discard)
		}},
		{"env --keys", func(addr string) error {
			return envCmd(context.Background(), []string{"--addr", addr, "--profile", "train", "--token-file", token, "--keys"}, os.Environ(), io.Discard, io.Discard)
		}},
		{"env", func(addr string) error {
			return envCmd(context.Background(), []string{"--addr", addr, "--profile", "train", "--token-file", token}, os.Environ(), io.Discard, io.Discard)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSquatter(t)
			err := tc.run(s.addr)
			if n := s.received(t); n != "0" {
				t.Errorf("the squatter (uid %d) received %s bytes", squatterUID, n)
			}
			if err == nil || !strings.Contains(err.Error(), errForeignListener.Error()) || !strings.Contains(err.Error(), fmt.Sprintf("uid %d", squatterUID)) {
				t.Errorf("%s against a squatter: %v, want a refusal naming uid %d", tc.name, err, squatterUID)
			}
		})
	}
}

// TestSocketTrust: root, the caller and the owners of the given files are
// trusted; another uid is not, and no listener is an error only when one
// is required.
func TestSocketTrust(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := trustFor().check(addr, true); err != nil {
		t.Errorf("own listener refused: %v", err)
	}
	ln.Close()
	if err := trustFor().check(addr, false); err != nil {
		t.Errorf("no listener, not required: %v", err)
	}
	if err := trustFor().check(addr, true); err == nil {
		t.Errorf("no listener, required: nil error")
	}
	if err := trustFor().check("localhost:791", false); err == nil {
		t.Errorf("a host name was accepted: its owner cannot be checked")
	}
}
