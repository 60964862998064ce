package config

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorRendersOneProblemPerLine(t *testing.T) {
	e := &Error{Problems: []Problem{
		{Var: "CWCREDS_PROFILES", Msg: "required"},
		{Var: "CWCREDS_PROFILE_A_SOURCE", Msg: `"x" is not a source`},
	}}
	want := "CWCREDS_PROFILES: required\nCWCREDS_PROFILE_A_SOURCE: \"x\" is not a source"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var target *Error
	if !errors.As(fmt.Errorf("invalid configuration:\n%w", e), &target) || target != e {
		t.Errorf("errors.As did not find the *Error through wrapping")
	}
}

func TestProblemsErrNilWhenEmpty(t *testing.T) {
	var ps problems
	if err := ps.err(nil); err != nil {
		t.Errorf("err() with no problems = %v, want nil", err)
	}
}

func TestSortKey(t *testing.T) {
	listed := []string{"B", "A", "A_CLIENT"}
	order := []string{
		"CWCREDS_PROFILES",
		"CWCREDS_LISTEN_ADDR",
		"CWCREDS_RUNTIME_DIR",
		"RUNTIME_DIRECTORY",
		"CWCREDS_NODE_NAME",
		"CREDENTIALS_DIRECTORY",
		"CWCREDS_AAA",
		"CWCREDS_PROFILE_B_SOURCE",
		"CWCREDS_PROFILE_B_CLIENT_TOKEN_FILE",
		"CWCREDS_PROFILE_B_ZZZ",
		"CWCREDS_PROFILE_A_SOURCE",
		"CWCREDS_PROFILE_A_CLIENT_SOURCE",
		"CWCREDS_PROFILE_C_SOURCE",
	}
	var ps problems
	for i := len(order) - 1; i >= 0; i-- {
		ps.add(order[i], "m")
	}
	e := ps.err(listed).(*Error)
	for i, p := range e.Problems {
		if p.Var != order[i] {
			t.Errorf("problem %d is %s, want %s", i, p.Var, order[i])
		}
	}
}
