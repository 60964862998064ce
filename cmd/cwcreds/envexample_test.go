package main

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cwcreds/cwcreds/config"
)

// envExamplePath is the environment file example that scripts/install.sh
// installs as /etc/cwcreds/cwcreds.env.example (and as cwcreds.env when
// there is none yet).
const envExamplePath = "../../systemd/cwcreds.env.example"

var updateEnvExample = flag.Bool("update-env-example", false,
	"rewrite systemd/cwcreds.env.example from config.Vars()")

// envExampleProfile is the profile the example configures; per-profile
// variables are shown for it.
const envExampleProfile = "training"

// envExampleSet are the settings the example makes: with the API access
// token in /etc/cwcreds/api-token (LoadCredential=api-token:... in the
// unit) they are a working configuration. Everything else is shown
// commented out.
var envExampleSet = map[string]string{
	"CWCREDS_PROFILES":                  envExampleProfile,
	"CWCREDS_PROFILE_<NAME>_SOURCE":     "access-key",
	"CWCREDS_PROFILE_<NAME>_TOKEN_FILE": "api-token",
}

// envExampleValues are sample values for commented-out variables whose
// default is not a literal value.
var envExampleValues = map[string]string{
	"CWCREDS_RUNTIME_DIR":                      "/run/cwcreds",
	"CWCREDS_NODE_NAME":                        "gpu-node-7",
	"CWCREDS_PROFILE_<NAME>_ORG_ID":            "cw123456",
	"CWCREDS_PROFILE_<NAME>_CONFIG_ID":         "saml-config-id",
	"CWCREDS_PROFILE_<NAME>_CLIENT_TOKEN_FILE": "/run/cwcreds/" + envExampleProfile + ".token",
}

const envExampleHeader = `# cwcreds configuration: /etc/cwcreds/cwcreds.env, read by the daemon itself
# (CWCREDS_ENV_FILE in cwcreds.service) at start and at every
# systemctl reload cwcreds. Owner root, group cwcreds, mode 0640: the daemon
# refuses it when its group or others can write it. Installed as
# cwcreds.env.example; scripts/install.sh copies it to cwcreds.env only
# when there is none, and never overwrites it.
#
# GENERATED from config.Vars() by TestEnvExampleDocumentsEveryVariable in
# cmd/cwcreds; do not edit the source copy by hand. Regenerate with
#   go test ./cmd/cwcreds -run TestEnvExample -update-env-example
#
# Format: one NAME=value per line, only CWCREDS_ variables; a value may be
# quoted whole in '...' or "..."; no "export", no $ expansion, comments
# only on lines of their own. Unset and empty mean the default. A CWCREDS_
# variable that cwcreds does not know is an error, so a typo cannot pass
# unnoticed. Every problem is reported at once (exit status 2 at start-up,
# in the journal: journalctl -u cwcreds).
# After a change: systemctl reload cwcreds. Profiles are added, removed and
# changed live, and unchanged ones keep their keys; a file with a problem
# is rejected as a whole and the daemon keeps running as before (see
# journalctl -u cwcreds). Settings marked "needs a restart" below take
# effect only with systemctl restart cwcreds.
#
# This example serves one profile, "training", with an API access token:
#   1. put the token in /etc/cwcreds/api-token (owner root, mode 0600);
#      the unit's LoadCredential=api-token:/etc/cwcreds/api-token hands it
#      to the daemon, and the relative TOKEN_FILE=api-token below finds it;
#   2. systemctl enable --now cwcreds
#   3. add the users whose processes may use it to group cwcreds; they read
#      the client token from /run/cwcreds/training.token.
# LoadCredential= copies the token when the service starts: after replacing
# /etc/cwcreds/api-token, run systemctl restart cwcreds.
#
# More profiles: list them in CWCREDS_PROFILES and repeat the per-profile
# block with their <NAME> (upper case, '-' as '_'). Each extra token file
# needs its own LoadCredential= line in a drop-in (systemctl edit cwcreds).
`

// renderEnvExample builds the example from config.Vars().
func renderEnvExample() string {
	var b strings.Builder
	b.WriteString(envExampleHeader)
	section := ""
	for _, v := range config.Vars() {
		perProfile := strings.Contains(v.Name, "<NAME>")
		s := "Global settings"
		if perProfile {
			s = `Profile "` + envExampleProfile + `"`
		}
		if s != section {
			section = s
			b.WriteString("\n# ===== " + section + " " + strings.Repeat("=", max(0, 68-len(section))) + "\n")
			if perProfile {
				b.WriteString("# Variables CWCREDS_PROFILE_<NAME>_*, shown for <NAME> = " + envExampleEnvName() + ".\n")
			}
		}
		name := envExampleName(v.Name)
		b.WriteString("\n# " + name)
		switch {
		case strings.HasPrefix(v.Default, "("):
			b.WriteString(" " + v.Default)
		case v.Default != "":
			b.WriteString(" (default: " + v.Default + ")")
		}
		b.WriteByte('\n')
		for _, line := range v.DescriptionLines(74) {
			b.WriteString("#   " + line + "\n")
		}
		if val, ok := envExampleSet[v.Name]; ok {
			b.WriteString(name + "=" + val + "\n")
			continue
		}
		val, ok := envExampleValues[v.Name]
		if !ok && !strings.HasPrefix(v.Default, "(") && !strings.ContainsAny(v.Default, " $<") {
			val = v.Default
		}
		b.WriteString("#" + name + "=" + val + "\n")
	}
	return b.String()
}

func envExampleEnvName() string {
	return strings.ToUpper(strings.ReplaceAll(envExampleProfile, "-", "_"))
}

func envExampleName(name string) string {
	return strings.ReplaceAll(name, "<NAME>", envExampleEnvName())
}

// envExampleAssignments returns the NAME=value lines of the example, set
// or commented out.
func envExampleAssignments(t *testing.T, content string) (set, commented map[string]string) {
	t.Helper()
	set, commented = map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		line := sc.Text()
		target := set
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			line, target = rest, commented
		}
		if name, val, ok := strings.Cut(line, "="); ok && strings.HasPrefix(name, "CWCREDS_") && !strings.ContainsAny(name, " <") {
			target[name] = val
		}
	}
	return set, commented
}

func TestEnvExampleDocumentsEveryVariable(t *testing.T) {
	want := renderEnvExample()
	if *updateEnvExample {
		if err := os.WriteFile(envExamplePath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", envExamplePath)
	}
	b, err := os.ReadFile(envExamplePath)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./cmd/cwcreds -run TestEnvExample -update-env-example)", err)
	}
	got := string(b)

	set, commented := envExampleAssignments(t, got)
	for _, v := range config.Vars() {
		name := envExampleName(v.Name)
		_, isSet := set[name]
		_, isCommented := commented[name]
		if !isSet && !isCommented {
			t.Errorf("%s does not document %s (%s)", envExamplePath, name, v.Name)
		}
		if !strings.Contains(got, v.Description[:min(40, len(v.Description))]) {
			t.Errorf("%s does not carry the current description of %s", envExamplePath, v.Name)
		}
	}
	if got != want {
		t.Errorf("%s is out of date with config.Vars(); regenerate it:\n"+
			"  go test ./cmd/cwcreds -run TestEnvExample -update-env-example", envExamplePath)
	}
}

// TestEnvExampleIsAWorkingConfig loads the example's settings as systemd
// would pass them (with LoadCredential='s $CREDENTIALS_DIRECTORY), so the
// cwcreds.env that install.sh creates from it is valid as it stands.
func TestEnvExampleIsAWorkingConfig(t *testing.T) {
	b, err := os.ReadFile(envExamplePath)
	if err != nil {
		t.Fatal(err)
	}
	clearEnv(t, "CWCREDS_")
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "api-token"), []byte("CW-TOKEN"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv("RUNTIME_DIRECTORY", t.TempDir())
	set, commented := envExampleAssignments(t, string(b))
	if len(set) == 0 {
		t.Fatal("the example sets no variable")
	}
	for k, v := range set {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(os.Environ())
	if err != nil {
		t.Fatalf("the example's settings do not load:\n%v", err)
	}
	if len(cfg.Profiles) != 1 || cfg.Profiles[0].Name != envExampleProfile {
		t.Errorf("profiles = %+v, want just %q", cfg.Profiles, envExampleProfile)
	}
	if want := filepath.Join(creds, "api-token"); cfg.Profiles[0].TokenFile != want {
		t.Errorf("token file = %q, want %q (resolved in $CREDENTIALS_DIRECTORY)", cfg.Profiles[0].TokenFile, want)
	}

	// Each commented-out global default, uncommented, is accepted as well.
	for k, v := range commented {
		if v == "" || strings.HasPrefix(k, "CWCREDS_PROFILE_") {
			continue
		}
		t.Run(k, func(t *testing.T) {
			t.Setenv(k, v)
			if _, err := config.Load(os.Environ()); err != nil {
				t.Errorf("%s=%s from the example: %v", k, v, err)
			}
		})
	}
}

// readmePath is the README whose "Configuration reference" table lists
// every variable; like the env example it is generated from config.Vars(),
// so the two can never disagree with the code.
const readmePath = "../../README.md"

// renderReadmeReference returns the table rows for config.Vars(), one line
// each, in README's Markdown (angle brackets escaped, pipes escaped).
func renderReadmeReference() []string {
	esc := strings.NewReplacer("<", "&lt;", ">", "&gt;", "|", `\|`)
	var rows []string
	for _, v := range config.Vars() {
		rows = append(rows, "| `"+v.Name+"` | "+esc.Replace(v.Default)+" | "+esc.Replace(v.Description)+" |")
	}
	return rows
}

// TestReadmeReferenceMatchesVars: README's configuration table is exactly
// the rows config.Vars() renders, in order, between the table header and
// the first line that is not a row. -update-env-example rewrites it.
func TestReadmeReferenceMatchesVars(t *testing.T) {
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	start := -1
	for i := 0; i+1 < len(lines); i++ {
		if lines[i] == "| Variable | Default | Meaning |" && lines[i+1] == "| --- | --- | --- |" {
			start = i + 2
			break
		}
	}
	if start < 0 {
		t.Fatalf("%s has no configuration table header", readmePath)
	}
	end := start
	for end < len(lines) && strings.HasPrefix(lines[end], "| `") {
		end++
	}
	want := renderReadmeReference()
	if *updateEnvExample {
		out := append(append(append([]string{}, lines[:start]...), want...), lines[end:]...)
		if err := os.WriteFile(readmePath, []byte(strings.Join(out, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got := lines[start:end]
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		for i := range max(len(got), len(want)) {
			g, w := "", ""
			if i < len(got) {
				g = got[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if g != w {
				t.Errorf("README configuration table row %d:\n got: %s\nwant: %s", i+1, g, w)
			}
		}
		t.Errorf("regenerate it: go test ./cmd/cwcreds -run 'TestEnvExample|TestReadme' -update-env-example")
	}
}
