package cwapi

import "time"

// Names the external tests (package cwapi_test) use and the product does not.

// ReadTokenFile is ReadTokenFileWith with the zero TokenFileRules: it
// refuses a file its group or others can read or write.
func ReadTokenFile(path string) (string, error) { return ReadTokenFileWith(path, TokenFileRules{}) }

// APITokenKeyLifetime is the fixed lifetime of keys from the direct API-token
// exchange and the container-credentials OIDC exchange (documented upstream).
const APITokenKeyLifetime = 15 * time.Minute
