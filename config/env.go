package config

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// env is the environment the configuration is read from: every variable by
// name. It is this package's only source: nothing here reads the process
// environment. Load and LoadLocal build it from the environ they are given
// (os.Environ(), or for an env file the process environment with the
// file's variables after it).
type env map[string]string

// parseEnviron returns environ's variables, from "NAME=value" entries; a
// later entry wins, as for os.Environ and a file read after it.
func parseEnviron(environ []string) env {
	e := make(env, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			e[k] = v
		}
	}
	return e
}

// decode fills spec, a pointer to a struct of string fields, from e under
// prefix. envconfig names each field's variable (split_words, no other
// tags) and e gives its value; an unset variable decodes as "".
func (e env) decode(prefix string, spec any) error {
	var names strings.Builder
	if err := envconfig.Usagef(prefix, spec, &names, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		return err
	}
	v := reflect.ValueOf(spec).Elem()
	keys := strings.Fields(names.String())
	if len(keys) != v.NumField() {
		return fmt.Errorf("envconfig names %d variables for the %d fields of %T", len(keys), v.NumField(), spec)
	}
	for i, k := range keys {
		v.Field(i).SetString(e[k])
	}
	return nil
}
