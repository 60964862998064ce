package server

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// One key shared by tokens that expire at different times (identity
// sharing): each caller sees its own token's expiry, and the kept bodies
// never mix them up.
func TestWorkloadBodiesPerExpiration(t *testing.T) {
	exp := time.Date(2026, 12, 6, 13, 0, 0, 0, time.UTC)
	creds := &cwapi.Credentials{AccessKeyID: "CWKEY", SecretAccessKey: "secret", Expires: exp}
	b := newWorkloadBodies()
	for range 2 {
		for _, until := range []time.Time{exp, exp.Add(-20 * time.Minute), exp.Add(-40 * time.Minute)} {
			body, err := b.body(creds, until)
			if err != nil {
				t.Fatal(err)
			}
			var got credentialsBody
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if want := until.Format(expirationLayout); got.Expiration != want || got.AccessKeyID != "CWKEY" {
				t.Errorf("body for Expiration %s = %+v", want, got)
			}
		}
	}
}
