package s3plane

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// Defaults for Options.
const (
	DefaultMaxSkew      = 15 * time.Minute
	DefaultMaxBodyBytes = 1 << 30
)

// KeySource looks up a key by its id, in any status, secret included.
// *cwapitest.Emulator implements it.
type KeySource interface {
	Key(accessKeyID string) (cwapitest.Key, bool)
}

// Options configures a Plane.
type Options struct {
	// Keys is where keys are looked up; required.
	Keys KeySource
	// Now reads the clock for key expiry and age, request skew and
	// presigned-URL expiry; it should be the emulator's. Default time.Now.
	Now func() time.Time
	// PropagationDelay is how old a key must be (Now - Key.Created) before
	// it is accepted; a younger one is refused with InvalidAccessKeyId, as
	// CoreWeave's S3 refuses a key for a while after it is minted. 0 (the
	// default) accepts keys at once. SetPropagationDelay changes it.
	PropagationDelay time.Duration
	// Region, if set, is the only region accepted in a credential scope;
	// another is refused with AuthorizationHeaderMalformed. "" accepts any.
	Region string
	// VirtualHostBases are the host names under which "<bucket>.<base>"
	// addresses a bucket (virtual-hosted style); any other host, an IP
	// address included, is path style. Default {"localhost"}.
	VirtualHostBases []string
	// MaxSkew is how far X-Amz-Date may be from Now. Default 15 minutes.
	MaxSkew time.Duration
	// MaxBodyBytes bounds a request body, which is held in memory to be
	// verified before it is stored. Default 1 GiB.
	MaxBodyBytes int64
	// OnRefuse, if set, is called with every refused request, after the
	// refusal is counted and before it is written, e.g. to log it.
	OnRefuse func(Refusal)
}

// Refusal describes a refused request. It never carries a secret.
type Refusal struct {
	// AccessKeyID is the key the request claimed to be signed with; ""
	// if none could be read.
	AccessKeyID string
	// Code and Message are the S3 error sent, e.g. "InvalidAccessKeyId".
	Code, Message string
	// Status is the HTTP status sent.
	Status int
	// Method and Path are the request's.
	Method, Path string
}

// Stats counts the requests the plane has answered.
type Stats struct {
	// Accepted counts requests that passed authentication (whatever S3
	// then answered).
	Accepted int `json:"accepted"`
	// Refused counts refused requests by S3 error code.
	Refused map[string]int `json:"refused"`
	// AcceptedByKey counts accepted requests per access key id.
	AcceptedByKey map[string]int `json:"acceptedByKey"`
}

// Plane is the S3 data plane. It implements http.Handler and is safe for
// concurrent use. Create it with New.
type Plane struct {
	keys     KeySource
	now      func() time.Time
	region   string
	bases    []string
	maxSkew  time.Duration
	maxBody  int64
	onRefuse func(Refusal)
	signer   *v4.Signer
	backend  *s3mem.Backend
	s3       http.Handler
	seq      atomic.Uint64

	mu       sync.Mutex
	delay    time.Duration
	accepted int
	byKey    map[string]int
	refused  map[string]int
}

// New returns a plane with no buckets. It panics if opts.Keys is nil.
func New(opts Options) *Plane {
	if opts.Keys == nil {
		panic("s3plane: Options.Keys is nil")
	}
	p := &Plane{
		keys:     opts.Keys,
		now:      opts.Now,
		region:   opts.Region,
		bases:    opts.VirtualHostBases,
		maxSkew:  opts.MaxSkew,
		maxBody:  opts.MaxBodyBytes,
		onRefuse: opts.OnRefuse,
		delay:    max(opts.PropagationDelay, 0),
		byKey:    map[string]int{},
		refused:  map[string]int{},
		signer: v4.NewSigner(func(o *v4.SignerOptions) {
			o.DisableURIPathEscaping = true // S3 signs the path as sent
			o.DisableHeaderHoisting = true
		}),
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.bases == nil {
		p.bases = []string{"localhost"}
	}
	if p.maxSkew <= 0 {
		p.maxSkew = DefaultMaxSkew
	}
	if p.maxBody <= 0 {
		p.maxBody = DefaultMaxBodyBytes
	}
	ts := timeSource{p.now}
	p.backend = s3mem.New(s3mem.WithTimeSource(ts))
	p.s3 = gofakes3.New(p.backend,
		gofakes3.WithTimeSource(ts),
		gofakes3.WithTimeSkewLimit(0), // admission checks skew, on Now
		gofakes3.WithoutVersioning(),
	).Server()
	return p
}

// CreateBucket creates a bucket directly, without a signed request (as an
// administrator would, e.g. for the demo).
func (p *Plane) CreateBucket(name string) error {
	if err := gofakes3.ValidateBucketName(name); err != nil {
		return fmt.Errorf("bucket %q: %w", name, err)
	}
	if err := p.backend.CreateBucket(name); err != nil {
		return fmt.Errorf("bucket %q: %w", name, err)
	}
	return nil
}

// SetPropagationDelay sets how old a key must be to be accepted, from now
// on; 0 or less accepts keys at once.
func (p *Plane) SetPropagationDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = max(d, 0)
}

// PropagationDelay returns the delay set by Options or SetPropagationDelay.
func (p *Plane) PropagationDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// Stats returns a snapshot of the counters.
func (p *Plane) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Accepted: p.accepted, Refused: maps.Clone(p.refused), AcceptedByKey: maps.Clone(p.byKey)}
}

// ServeHTTP authenticates the request and, if it is admitted, serves it
// from the in-memory store.
func (p *Plane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := fmt.Sprintf("%016X", p.seq.Add(1))
	w.Header().Set("x-amz-request-id", id)
	keyID, serr := p.admit(r)
	p.mu.Lock()
	if serr != nil {
		p.refused[serr.code]++
	} else {
		p.accepted++
		p.byKey[keyID]++
	}
	p.mu.Unlock()
	if serr != nil {
		if p.onRefuse != nil {
			p.onRefuse(Refusal{AccessKeyID: keyID, Code: serr.code, Message: serr.message, Status: serr.status, Method: r.Method, Path: r.URL.Path})
		}
		serr.write(w, r, id)
		return
	}
	p.toPathStyle(r)
	sanitize(r)
	ew := &errorWriter{ResponseWriter: w, requestID: id}
	p.s3.ServeHTTP(ew, r)
	ew.flush()
}

// errorWriter keeps the plane's request id on gofakes3's replies (it sets
// its own x-amz-request-id and leaves RequestId out of its error bodies):
// it holds an error reply's body back and adds the id to it.
type errorWriter struct {
	http.ResponseWriter
	requestID string
	status    int
	held      []byte // the body of an error reply
}

func (w *errorWriter) WriteHeader(status int) {
	if w.status != 0 {
		return
	}
	w.status = status
	w.Header().Set("x-amz-request-id", w.requestID)
	if status < 400 {
		w.ResponseWriter.WriteHeader(status)
	}
}

func (w *errorWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.status < 400 {
		return w.ResponseWriter.Write(b)
	}
	w.held = append(w.held, b...)
	return len(b), nil
}

// flush sends a held error reply, with <RequestId> added to an S3 error
// body that lacks one.
func (w *errorWriter) flush() {
	if w.status < 400 {
		return
	}
	body := w.held
	if i := bytes.LastIndex(body, []byte("</Error>")); i >= 0 && !bytes.Contains(body, []byte("<RequestId>")) {
		var id bytes.Buffer
		xml.EscapeText(&id, []byte(w.requestID))
		body = slices.Concat(body[:i], []byte("<RequestId>"), id.Bytes(), []byte("</RequestId>"), body[i:])
	}
	if len(body) > 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.ResponseWriter.WriteHeader(w.status)
	w.ResponseWriter.Write(body)
}

// toPathStyle rewrites a virtual-hosted request ("<bucket>.<base>") to the
// path-style form gofakes3 routes. It runs after the signature check,
// which covers the path as sent.
func (p *Plane) toPathStyle(r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, base := range p.bases {
		suffix := "." + strings.ToLower(strings.Trim(base, "."))
		bucket, ok := strings.CutSuffix(host, suffix)
		if !ok || bucket == "" {
			continue
		}
		if r.URL.Path == "/" || r.URL.Path == "" {
			r.URL.Path, r.URL.RawPath = "/"+bucket, ""
			return
		}
		r.URL.Path = "/" + bucket + r.URL.Path
		if r.URL.RawPath != "" {
			r.URL.RawPath = "/" + bucket + r.URL.RawPath
		}
		return
	}
}

// sanitize drops what gofakes3 must not see: it stores every x-amz-*
// header as object metadata and echoes it on GET, and would try to decode
// an aws-chunked body that admission has already decoded.
func sanitize(r *http.Request) {
	for k := range r.Header {
		if strings.HasPrefix(k, "X-Amz-") && !strings.HasPrefix(k, "X-Amz-Meta-") && !strings.HasPrefix(k, "X-Amz-Copy-Source") {
			delete(r.Header, k)
		}
	}
	r.Header.Del("Authorization")
	if ce := r.Header.Values("Content-Encoding"); len(ce) > 0 {
		var keep []string
		for _, v := range ce {
			for part := range strings.SplitSeq(v, ",") {
				if part = strings.TrimSpace(part); part != "" && !strings.EqualFold(part, "aws-chunked") {
					keep = append(keep, part)
				}
			}
		}
		r.Header.Del("Content-Encoding")
		if len(keep) > 0 {
			r.Header.Set("Content-Encoding", strings.Join(keep, ","))
		}
	}
}

// timeSource adapts a clock to gofakes3.TimeSource, in GMT as S3 writes
// its dates.
type timeSource struct{ now func() time.Time }

var gmt = time.FixedZone("GMT", 0)

func (t timeSource) Now() time.Time                   { return t.now().In(gmt) }
func (t timeSource) Since(at time.Time) time.Duration { return t.now().Sub(at) }
