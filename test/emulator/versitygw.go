package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// vgwAdmin calls the versitygw admin API (PATCH /create-user and
// /delete-user, SigV4-signed with the root key, as `versitygw admin` does).
type vgwAdmin struct {
	base   string
	creds  aws.Credentials
	region string
	client *http.Client

	mu    sync.Mutex
	users map[string]time.Time // registered key id -> expiry (zero: never)
}

// vgwAccount is versitygw's auth.Account as its admin API reads it (XML of
// the Go struct, no tags).
type vgwAccount struct {
	XMLName   xml.Name `xml:"Account"`
	Access    string   `xml:"Access"`
	Secret    string   `xml:"Secret"`
	Role      string   `xml:"Role"`
	UserID    int      `xml:"UserID"`
	GroupID   int      `xml:"GroupID"`
	ProjectID int      `xml:"ProjectID"`
}

func (a *vgwAdmin) createUser(ctx context.Context, access, secret string, expiry time.Time) error {
	body, err := xml.Marshal(vgwAccount{Access: access, Secret: secret, Role: "user"})
	if err != nil {
		return err
	}
	// A mint must not be answered before the S3 server knows the key, so
	// retry briefly rather than hand out a key nobody accepts.
	for attempt := 0; ; attempt++ {
		err = a.do(ctx, "/create-user", body)
		if err == nil || attempt == 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.users[access] = expiry
	a.mu.Unlock()
	return nil
}

func (a *vgwAdmin) deleteUser(ctx context.Context, access string) error {
	if err := a.do(ctx, "/delete-user?access="+url.QueryEscape(access), nil); err != nil {
		return err
	}
	a.mu.Lock()
	delete(a.users, access)
	a.mu.Unlock()
	return nil
}

func (a *vgwAdmin) do(ctx context.Context, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, a.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	payload := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payload)
	if err := v4.NewSigner().SignHTTP(ctx, a.creds, req, payload, "s3", a.region, time.Now()); err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("versitygw %s: %s: %s", strings.SplitN(path, "?", 2)[0], resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// deleteExpired removes keys from the S3 server grace after they expire,
// so a client still signing with an expired key fails as it would at
// CoreWeave.
func (a *vgwAdmin) deleteExpired(ctx context.Context, grace time.Duration, logf func(string, ...any)) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var due []string
		a.mu.Lock()
		for id, exp := range a.users {
			if !exp.IsZero() && now.After(exp.Add(grace)) {
				due = append(due, id)
			}
		}
		a.mu.Unlock()
		for _, id := range due {
			if err := a.deleteUser(ctx, id); err != nil {
				logf("ERROR deleting expired key %s from the S3 server: %v", id, err)
				continue
			}
			logf("key %s expired; deleted from the S3 server", id)
		}
	}
}
