package cwapitest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Numeric gRPC status codes, as carried in the "code" field of error
// replies and in Fault.Code.
const (
	CodeCanceled          = 1
	CodeUnknown           = 2
	CodeInvalidArgument   = 3
	CodeDeadlineExceeded  = 4
	CodeNotFound          = 5
	CodePermissionDenied  = 7
	CodeResourceExhausted = 8
	CodeUnimplemented     = 12
	CodeInternal          = 13
	CodeUnavailable       = 14
	CodeUnauthenticated   = 16
)

const (
	maxBodyBytes   = 1 << 20
	maxAttributes  = 15
	maxAttrLen     = 63
	permanentStamp = "1970-01-01T00:00:00Z"
)

var (
	attrKeyRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	attrValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
)

// httpStatus maps a gRPC code to the HTTP status a transcoding gateway uses.
func httpStatus(code int) int {
	switch code {
	case CodeCanceled:
		return 499
	case CodeInvalidArgument, 9, 11: // FAILED_PRECONDITION, OUT_OF_RANGE
		return http.StatusBadRequest
	case CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case CodeNotFound:
		return http.StatusNotFound
	case 6, 10: // ALREADY_EXISTS, ABORTED
		return http.StatusConflict
	case CodePermissionDenied:
		return http.StatusForbidden
	case CodeResourceExhausted:
		return http.StatusTooManyRequests
	case CodeUnimplemented:
		return http.StatusNotImplemented
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	default:
		return http.StatusInternalServerError
	}
}

// grpcCode is the inverse of httpStatus, for faults that give only a status.
func grpcCode(status int) int {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalidArgument
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodePermissionDenied
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusTooManyRequests:
		return CodeResourceExhausted
	case 499:
		return CodeCanceled
	case http.StatusNotImplemented:
		return CodeUnimplemented
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return CodeUnavailable
	case http.StatusGatewayTimeout:
		return CodeDeadlineExceeded
	case http.StatusInternalServerError:
		return CodeInternal
	default:
		return CodeUnknown
	}
}

// apiError is an error reply. Its message must never contain a secret.
type apiError struct {
	status int
	code   int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// errorf builds an apiError whose HTTP status follows from code.
func errorf(code int, format string, args ...any) *apiError {
	return &apiError{status: httpStatus(code), code: code, msg: fmt.Sprintf(format, args...)}
}

// invalid is an INVALID_ARGUMENT error.
func invalid(format string, args ...any) *apiError {
	return errorf(CodeInvalidArgument, format, args...)
}

// statusBody is google.rpc.Status as JSON.
type statusBody struct {
	Code    int      `json:"code"`
	Message string   `json:"message"`
	Details []string `json:"details"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, statusBody{Code: e.code, Message: e.msg, Details: []string{}})
}

// writeJSON writes v as the whole reply; headers are set before the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"code":13,"message":"encode reply","details":[]}`)
	}
	writeRaw(w, status, data)
}

func writeRaw(w http.ResponseWriter, status int, data []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data) // a failed write means the client is gone
}

// readBody reads a capped request body. An empty body reads as nil.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, invalid("request body exceeds %d bytes", maxBodyBytes)
		}
		return nil, invalid("read request body: %v", err)
	}
	return bytes.TrimSpace(data), nil
}

// fields is a JSON request object, field name to raw value, read the way
// protojson does: both the camelCase and the snake_case name are accepted,
// null means absent, and unknown fields are ignored.
type fields map[string]json.RawMessage

// readFields reads a request body that must be a JSON object (or empty).
func readFields(w http.ResponseWriter, r *http.Request) (fields, *apiError) {
	data, aerr := readBody(w, r)
	if aerr != nil {
		return nil, aerr
	}
	if len(data) == 0 {
		return fields{}, nil
	}
	var f fields
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, invalid("request body is not a valid JSON object")
	}
	if f == nil { // the body was null
		f = fields{}
	}
	return f, nil
}

// raw returns the value of the first present, non-null name.
func (f fields) raw(names ...string) (json.RawMessage, string) {
	for _, n := range names {
		if v, ok := f[n]; ok && string(v) != "null" {
			return v, n
		}
	}
	return nil, names[0]
}

// str reads an optional string field; absent reads as "".
func (f fields) str(names ...string) (string, *apiError) {
	v, name := f.raw(names...)
	if v == nil {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", invalid("%s must be a string", name)
	}
	return s, nil
}

// uint32 reads an optional uint32 field given as a JSON number or a numeric
// string. ok reports whether it was present.
func (f fields) uint32(names ...string) (n uint32, ok bool, aerr *apiError) {
	v, name := f.raw(names...)
	if v == nil {
		return 0, false, nil
	}
	s := string(v)
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, false, invalid("%s must be an unsigned integer", name)
		}
	}
	u, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false, invalid("%s must be an unsigned 32-bit integer", name)
	}
	return uint32(u), true, nil
}

// attributes reads and validates the optional "attributes" map (§3.6).
func (f fields) attributes() (map[string]string, *apiError) {
	v, _ := f.raw("attributes")
	attrs := map[string]string{}
	if v != nil {
		if err := json.Unmarshal(v, &attrs); err != nil {
			return nil, invalid("attributes must be an object of string values")
		}
	}
	return attrs, validateAttributes(attrs)
}

// validateAttributes applies the attribute rules of spec §3.6, reporting the
// first offending attribute in key order.
func validateAttributes(attrs map[string]string) *apiError {
	if len(attrs) > maxAttributes {
		return invalid("at most %d attributes are allowed, got %d", maxAttributes, len(attrs))
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case len(k) > maxAttrLen || !attrKeyRE.MatchString(k):
			return invalid("attribute %q: key must be a lower-case DNS label of at most %d characters", clip(k), maxAttrLen)
		case strings.HasPrefix(k, "cw-") || strings.HasPrefix(k, "role") || strings.HasPrefix(k, "groups"):
			return invalid("attribute %q: keys starting with cw-, role or groups are reserved", k)
		}
		if v := attrs[k]; len(v) > maxAttrLen || !attrValueRE.MatchString(v) {
			return invalid("attribute %q: value must be at most %d alphanumerics, '-', '_' or '.', starting and ending alphanumeric", k, maxAttrLen)
		}
	}
	return nil
}

// clip shortens user input quoted in a message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// formatTime renders an expiry; the zero time (permanent) is the Unix epoch.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return permanentStamp
	}
	return t.UTC().Format(time.RFC3339)
}
