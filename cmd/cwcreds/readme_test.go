package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../.."

// module is the module path every project import starts with.
const module = "github.com/cwcreds/cwcreds/"

// TestReadmeArchitecture: README's Architecture section stays short (at
// most 40 lines, heading included) and names only files, directories and
// tests that exist, so it cannot silently go stale when code moves.
func TestReadmeArchitecture(t *testing.T) {
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	var section []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if len(section) > 0 && strings.HasPrefix(l, "## ") {
			break
		}
		if len(section) > 0 || l == "## Architecture" {
			section = append(section, l)
		}
	}
	for len(section) > 0 && strings.TrimSpace(section[len(section)-1]) == "" {
		section = section[:len(section)-1]
	}
	if len(section) == 0 {
		t.Fatal("README has no Architecture section")
	}
	if len(section) > 40 {
		t.Errorf("the Architecture section has %d lines, want at most 40", len(section))
	}
	text := strings.Join(section, "\n")
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(text, -1) {
		name := m[1]
		switch {
		case strings.HasSuffix(name, ".go") && strings.Contains(name, "/"):
			if _, err := os.Stat(filepath.Join(repoRoot, name)); err != nil {
				t.Errorf("Architecture names %s, which does not exist", name)
			}
		case strings.HasSuffix(name, ".go"):
			found, _ := filepath.Glob(filepath.Join(repoRoot, "*", name))
			more, _ := filepath.Glob(filepath.Join(repoRoot, "*", "*", name))
			if len(found)+len(more) == 0 {
				t.Errorf("Architecture names %s, which is in no package", name)
			}
		case strings.HasPrefix(name, "Test"):
			if !testExists(t, name) {
				t.Errorf("Architecture names %s, which is no test", name)
			}
		case regexp.MustCompile(`^[a-z]+(/[a-z0-9]+)+$`).MatchString(name):
			if fi, err := os.Stat(filepath.Join(repoRoot, name)); err != nil || !fi.IsDir() {
				t.Errorf("Architecture names the package %s, which does not exist", name)
			}
		}
	}
}

// testExists reports whether some _test.go file declares func name.
func testExists(t *testing.T, name string) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil || found {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			found = strings.Contains(string(b), "\nfunc "+name+"(")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestImportsGoOneWay: the product's packages import each other in one
// direction only (README, Architecture): cmd/cwcreds → metrics → server →
// broker → broker/cwapi, with config and peer importing none of them, and
// the test double broker/cwapi/cwapitest imported by no product package
// but cmd/cwcreds (the demo). Test files are not counted.
func TestImportsGoOneWay(t *testing.T) {
	// Each package and the project packages it must not import.
	forbidden := map[string][]string{
		"broker/cwapi":           {"broker", "server", "metrics", "config", "cmd/cwcreds", "broker/idtoken", "broker/s3check"},
		"broker":                 {"server", "metrics", "config", "cmd/cwcreds", "broker/cwapi/cwapitest", "broker/idtoken", "broker/s3check"},
		"broker/idtoken":         {"broker", "server", "metrics", "config", "cmd/cwcreds"},
		"broker/s3check":         {"broker", "server", "metrics", "config", "cmd/cwcreds"},
		"server":                 {"metrics", "config", "cmd/cwcreds", "broker/cwapi/cwapitest"},
		"metrics":                {"config", "cmd/cwcreds", "broker/cwapi/cwapitest"},
		"config":                 {"broker", "broker/cwapi", "server", "metrics", "peer", "cmd/cwcreds"},
		"peer":                   {"broker", "broker/cwapi", "server", "metrics", "config", "cmd/cwcreds"},
		"broker/cwapi/cwapitest": {"broker", "server", "metrics", "config", "cmd/cwcreds"},
	}
	for pkg, not := range forbidden {
		for _, imp := range projectImports(t, pkg) {
			if slices.Contains(not, imp) {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
}

// projectImports returns the project packages that pkg's non-test files
// import, relative to the module.
func projectImports(t *testing.T, pkg string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, pkg, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("package %s: no Go files (%v)", pkg, err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, is := range af.Imports {
			p, _ := strconv.Unquote(is.Path.Value)
			if rel, ok := strings.CutPrefix(p, module); ok && !slices.Contains(out, rel) {
				out = append(out, rel)
			}
		}
	}
	return out
}
