package s3plane

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// maxChunkLine bounds a chunk header or trailer line of an aws-chunked body.
const maxChunkLine = 4 << 10

// readPayload reads r's body, verifies it against its payload hash, chunk
// signatures and checksums, and replaces it with the decoded payload.
func (p *Plane) readPayload(r *http.Request, s *sigV4, secret string) *s3Error {
	var body []byte
	var trailers http.Header
	switch h := s.payloadHash; {
	case h == unsignedPayload:
		var serr *s3Error
		if body, serr = p.readAll(r.Body); serr != nil {
			return serr
		}
	case h == streamingSigned || h == streamingUnsignedTrl:
		if s.presigned {
			return refuse(http.StatusBadRequest, "InvalidRequest", "a presigned request cannot have a streaming payload")
		}
		var signer *v4.StreamSigner
		if h == streamingSigned {
			seed, err := hex.DecodeString(s.signature)
			if err != nil {
				return errSignature(s.keyID)
			}
			signer = v4.NewStreamSigner(aws.Credentials{AccessKeyID: s.keyID, SecretAccessKey: secret}, s.service, s.region, seed)
		}
		decoded, err := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
		if err != nil || decoded < 0 {
			return refuse(http.StatusBadRequest, "MissingContentLength", "You must provide the x-amz-decoded-content-length HTTP header.")
		}
		if decoded > p.maxBody {
			return errTooLarge(p.maxBody)
		}
		var serr *s3Error
		body, trailers, serr = p.decodeChunks(r, s, signer, decoded)
		if serr != nil {
			return serr
		}
		if int64(len(body)) != decoded {
			return refuse(http.StatusBadRequest, "IncompleteBody", "The decoded body is %d bytes; x-amz-decoded-content-length says %d.", len(body), decoded)
		}
	case strings.HasPrefix(h, "STREAMING-"):
		return refuse(http.StatusNotImplemented, "NotImplemented", "The payload signing mode %q is not implemented by this emulator.", h)
	default:
		want, err := hex.DecodeString(h)
		if err != nil || len(want) != sha256.Size {
			return refuse(http.StatusBadRequest, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER or a hex SHA-256")
		}
		var serr *s3Error
		if body, serr = p.readAll(r.Body); serr != nil {
			return serr
		}
		if got := sha256.Sum256(body); !hmac.Equal(got[:], want) {
			return refuse(http.StatusBadRequest, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.").
				with("ClientComputedContentSHA256", h).with("S3ComputedContentSHA256", hex.EncodeToString(got[:]))
		}
	}
	if r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") == "" {
		// PutObject and UploadPart: checksums describe this body. (Other
		// requests' checksum headers describe something else, e.g. the
		// whole object on CompleteMultipartUpload.)
		if serr := checkChecksums(r.Header, trailers, body); serr != nil {
			return serr
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

func (p *Plane) readAll(body io.Reader) ([]byte, *s3Error) {
	if body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(body, p.maxBody+1))
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "IncompleteBody", "reading the body: %v", err)
	}
	if int64(len(b)) > p.maxBody {
		return nil, errTooLarge(p.maxBody)
	}
	return b, nil
}

func errTooLarge(limit int64) *s3Error {
	return refuse(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.").
		with("MaxSizeAllowed", strconv.FormatInt(limit, 10))
}

// decodeChunks reads an aws-chunked body: "<hex size>[;chunk-signature=<sig>]\r\n<data>\r\n"
// chunks up to a zero-size one, then trailer lines up to an empty line (or
// the end). With a signer every chunk's signature is checked in turn.
func (p *Plane) decodeChunks(r *http.Request, s *sigV4, signer *v4.StreamSigner, decoded int64) ([]byte, http.Header, *s3Error) {
	if r.Body == nil {
		return nil, nil, refuse(http.StatusBadRequest, "IncompleteBody", "The request body is empty.")
	}
	br := bufio.NewReaderSize(r.Body, 64<<10)
	malformed := func(format string, a ...any) *s3Error {
		return refuse(http.StatusBadRequest, "IncompleteBody", "Malformed aws-chunked body: "+format, a...)
	}
	body := make([]byte, 0, decoded)
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, nil, malformed("chunk header: %v", err)
		}
		sizeHex, ext, _ := strings.Cut(line, ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sizeHex), 16, 64)
		if err != nil || size < 0 {
			return nil, nil, malformed("chunk size %q", sizeHex)
		}
		if int64(len(body))+size > decoded {
			return nil, nil, malformed("chunks are longer than x-amz-decoded-content-length")
		}
		chunk := body[len(body) : len(body)+int(size)]
		if _, err := io.ReadFull(br, chunk); err != nil {
			return nil, nil, malformed("chunk data: %v", err)
		}
		if signer != nil {
			claimed, ok := strings.CutPrefix(ext, "chunk-signature=")
			if !ok {
				return nil, nil, malformed("a chunk has no chunk-signature")
			}
			sig, err := signer.GetSignature(r.Context(), nil, chunk, s.date)
			if err != nil || !hmac.Equal([]byte(hex.EncodeToString(sig)), []byte(strings.ToLower(claimed))) {
				return nil, nil, errSignature(s.keyID)
			}
		}
		body = body[:len(body)+int(size)]
		if size == 0 {
			break
		}
		if crlf, err := readLine(br); err != nil || crlf != "" {
			return nil, nil, malformed("no CRLF after a chunk")
		}
	}
	trailers := http.Header{}
	for {
		line, err := readLine(br)
		if errors.Is(err, io.EOF) && line == "" {
			break
		}
		if err != nil {
			return nil, nil, malformed("trailer: %v", err)
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, nil, malformed("trailer line without a colon")
		}
		trailers.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	declared := map[string]bool{}
	for _, v := range r.Header.Values("X-Amz-Trailer") {
		for name := range strings.SplitSeq(v, ",") {
			declared[http.CanonicalHeaderKey(strings.TrimSpace(name))] = true
		}
	}
	for name := range trailers {
		if !declared[name] {
			return nil, nil, refuse(http.StatusBadRequest, "MalformedTrailerError", "The request contained trailing data %q that was not declared in x-amz-trailer.", strings.ToLower(name))
		}
		delete(declared, name)
	}
	for name := range declared {
		return nil, nil, refuse(http.StatusBadRequest, "MalformedTrailerError", "The trailer %q declared in x-amz-trailer is missing.", strings.ToLower(name))
	}
	return body, trailers, nil
}

// readLine reads a line ending in CRLF (or, at the very end, nothing) and
// returns it without the CRLF.
func readLine(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		frag, err := br.ReadSlice('\n')
		if sb.Len()+len(frag) > maxChunkLine {
			return "", errors.New("line too long")
		}
		sb.Write(frag)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		line := sb.String()
		if err != nil {
			if line != "" && errors.Is(err, io.EOF) {
				return "", io.ErrUnexpectedEOF
			}
			return line, err
		}
		line, ok := strings.CutSuffix(line, "\r\n")
		if !ok {
			return "", errors.New("line not ended by CRLF")
		}
		return line, nil
	}
}

// checksumAlgorithms are the x-amz-checksum-* algorithms S3 verifies.
var checksumAlgorithms = map[string]func() hash.Hash{
	"crc32":     func() hash.Hash { return crc32.NewIEEE() },
	"crc32c":    func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) },
	"crc64nvme": func() hash.Hash { return crc64.New(crc64NVME) },
	"sha1":      sha1.New,
	"sha256":    sha256.New,
}

// crc64NVME is CRC-64/NVME (polynomial 0xad93d23594c93659, reflected).
var crc64NVME = crc64.MakeTable(0x9a6c9329ac4bc9b5)

// checkChecksums verifies every x-amz-checksum-<algorithm> header and
// trailer against the payload.
func checkChecksums(headers, trailers http.Header, body []byte) *s3Error {
	for _, h := range []http.Header{headers, trailers} {
		for name, vals := range h {
			alg, ok := strings.CutPrefix(strings.ToLower(name), "x-amz-checksum-")
			if !ok || alg == "type" || alg == "algorithm" || alg == "mode" {
				continue
			}
			newHash, known := checksumAlgorithms[alg]
			if !known {
				return refuse(http.StatusBadRequest, "InvalidRequest", "Value for x-amz-checksum-algorithm header is invalid: %q", alg)
			}
			sum := newHash()
			sum.Write(body)
			if want := base64.StdEncoding.EncodeToString(sum.Sum(nil)); len(vals) != 1 || vals[0] != want {
				return refuse(http.StatusBadRequest, "BadDigest", "The %s you specified did not match the calculated checksum.", strings.ToUpper(alg))
			}
		}
	}
	return nil
}
