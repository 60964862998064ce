package s3plane

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"strconv"
)

// s3Error is a refusal, written as S3 writes errors.
type s3Error struct {
	status  int
	code    string
	message string
	// extra elements S3 adds for some codes, e.g. AWSAccessKeyId or Region.
	extra []xmlField
}

type xmlField struct {
	XMLName xml.Name
	Value   string `xml:",chardata"`
}

func (e *s3Error) Error() string { return e.code + ": " + e.message }

func refuse(status int, code, format string, a ...any) *s3Error {
	return &s3Error{status: status, code: code, message: fmt.Sprintf(format, a...)}
}

func (e *s3Error) with(name, value string) *s3Error {
	e.extra = append(e.extra, xmlField{XMLName: xml.Name{Local: name}, Value: value})
	return e
}

// write sends the error; a HEAD reply carries the status alone, as S3's.
func (e *s3Error) write(w http.ResponseWriter, r *http.Request, requestID string) {
	body := struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		Extra     []xmlField
		RequestID string `xml:"RequestId"`
		HostID    string `xml:"HostId"`
	}{Code: e.code, Message: e.message, Extra: e.extra, RequestID: requestID, HostID: "s3plane"}
	out, err := xml.Marshal(body)
	if err != nil { // cannot happen: the struct marshals
		out = []byte("<Error><Code>InternalError</Code></Error>")
	}
	out = append([]byte(xml.Header), out...)
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	if r.Method == http.MethodHead {
		w.WriteHeader(e.status)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(e.status)
	w.Write(out)
}

// Messages as S3 words them.
const (
	msgInvalidKey   = "The AWS Access Key Id you provided does not exist in our records."
	msgSignature    = "The request signature we calculated does not match the signature you provided. Check your key and signing method."
	msgExpiredToken = "The provided token has expired."
)

func errInvalidKey(keyID string) *s3Error {
	return refuse(http.StatusForbidden, "InvalidAccessKeyId", msgInvalidKey).with("AWSAccessKeyId", keyID)
}

func errSignature(keyID string) *s3Error {
	return refuse(http.StatusForbidden, "SignatureDoesNotMatch", msgSignature).with("AWSAccessKeyId", keyID)
}

func errHeaderMalformed(format string, a ...any) *s3Error {
	return refuse(http.StatusBadRequest, "AuthorizationHeaderMalformed", "The authorization header is malformed; "+format, a...)
}

func errQueryMalformed(format string, a ...any) *s3Error {
	return refuse(http.StatusBadRequest, "AuthorizationQueryParametersError", format, a...)
}
