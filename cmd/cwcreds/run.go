package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/cwcreds/cwcreds/config"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise it comes from the module's build information.
var version = ""

// usageError makes the process exit with status 2: a bad subcommand, flag
// or configuration.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

const usageText = `Usage: cwcreds <command> [flags]

Commands:
  serve     run the credential daemon (configured by CWCREDS_* environment variables)
  reload    make the running daemon re-read CWCREDS_ENV_FILE (--pid PID, default $MAINPID) and wait
            for the outcome; exits non-zero, printing every problem, if it rejected the file
  demo      run the daemon against a built-in emulator of the CoreWeave API
  status    show every profile of the running daemon; exits 1 if any is unhealthy
  revoke    revoke a profile's current key upstream (--profile NAME or --all-cached) and mint a new one
  credential-process  print a profile's key as AWS credential_process JSON (for ~/.aws/config)
  env       print the export lines that point AWS SDKs at a profile
  version   print the version
  help      print this help and the configuration reference

Run 'cwcreds <command> -h' for a command's flags.
`

// run is the whole program: main only calls it. Configuration comes from
// environ (os.Environ() in main) and, for serve, CWCREDS_ENV_FILE on top:
// nothing reads or changes the process environment itself.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return &usageError{errors.New("no command given")}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := dispatch(ctx, args[0], args[1:], environ, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h printed the usage
	}
	return err
}

func dispatch(ctx context.Context, cmd string, rest, environ []string, stdout, stderr io.Writer) error {
	switch cmd {
	case "serve":
		if err := parseFlags(flag.NewFlagSet("serve", flag.ContinueOnError), rest, stderr); err != nil {
			return err
		}
		// Listen for SIGHUP before reading the configuration, so one sent
		// while starting (systemctl reload) is not fatal; it then re-reads
		// the configuration once serving.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		cfg, load, err := loadServeConfig(environ)
		if err != nil {
			return err
		}
		return serveWith(ctx, cfg, stderr, serveHooks{reloads: hup, load: load})
	case "reload":
		return reloadCmd(ctx, rest, environ, stdout, stderr)
	case "demo":
		return demo(ctx, rest, stdout, stderr)
	case "status":
		return statusCmd(ctx, rest, environ, stdout, stderr)
	case "revoke":
		return revokeCmd(ctx, rest, environ, stdout, stderr)
	case "credential-process":
		return credentialProcessCmd(ctx, rest, environ, stdout, stderr)
	case "env":
		return envCmd(ctx, rest, environ, stdout, stderr)
	case "version", "--version":
		if err := parseFlags(flag.NewFlagSet("version", flag.ContinueOnError), rest, stderr); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cwcreds %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		fmt.Fprintf(stdout, "\nConfiguration (environment variables):\n\n%s", config.Usage())
		return nil
	default:
		fmt.Fprint(stderr, usageText)
		return &usageError{fmt.Errorf("unknown command %q", cmd)}
	}
}

// parseFlags parses a subcommand's flags. -h prints the flags and is not an
// error; an unknown flag or a stray argument is a usage error.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cwcreds %s [flags]\n", fs.Name())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return &usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

func configError(err error) error {
	var ce *config.Error
	if errors.As(err, &ce) {
		return &usageError{fmt.Errorf("invalid configuration:\n%w", err)}
	}
	return err
}

func buildVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v = strings.TrimSpace(v + " " + s.Value[:12])
		}
	}
	if v == "" || v == "(devel)" {
		return "devel"
	}
	return v
}
