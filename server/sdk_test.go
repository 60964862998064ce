package server

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
)

// TestAWSSDKClient reads keys and errors through aws-sdk-go-v2's own
// container-credentials client against a live loopback listener.
func TestAWSSDKClient(t *testing.T) {
	keys := &fakeKeys{creds: testCreds()}
	s, _ := newTestServer(t, keys)
	ts := httptest.NewUnstartedServer(s)
	ts.Config = NewHTTPServer("", s, zerolog.Nop())
	ts.Start()
	defer ts.Close()
	url := ts.URL + "/v1/credentials/" + testProfile

	provider := endpointcreds.New(url, func(o *endpointcreds.Options) { o.AuthorizationToken = testToken })
	got, err := provider.Retrieve(t.Context())
	if err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	want := testCreds()
	if got.AccessKeyID != want.AccessKeyID || got.SecretAccessKey != want.SecretAccessKey ||
		got.SessionToken != "" || !got.CanExpire || !got.Expires.Equal(want.Expires) {
		t.Errorf("Retrieve = %+v, want key %s expiring %s with no session token", got, want.AccessKeyID, want.Expires)
	}

	// Errors: the SDK parses our JSON body into its code and message.
	keys.set(nil, &broker.UnavailableError{Profile: testProfile, RetryAt: time.Now().Add(time.Hour)})
	tests := []struct {
		name, token, code string
	}{
		{"bad token", "wrong", "Unauthorized"},
		{"no valid key", testToken, "NoValidKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := endpointcreds.New(url, func(o *endpointcreds.Options) {
				o.AuthorizationToken = tt.token
				o.Retryer = aws.NopRetryer{}
			})
			_, err := p.Retrieve(t.Context())
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.code || strings.TrimSpace(apiErr.ErrorMessage()) == "" {
				t.Errorf("Retrieve error = %v, want an API error with code %q and a message", err, tt.code)
			}
		})
	}
}
