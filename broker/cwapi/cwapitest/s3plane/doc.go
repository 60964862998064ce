// Package s3plane is the S3 data plane of the CoreWeave API emulator
// (package cwapitest): an in-memory S3 server that accepts only requests
// signed with keys the emulator minted, and refuses them as S3 does. With
// it, `cwcreds demo`, test/emulator and tests run an unmodified S3 client
// (the AWS CLI, boto3, aws-sdk-go-v2) end to end on keys the client never
// saw, served by cwcreds. It is a test tool: never expose it beyond a test
// host.
//
// # What is whose
//
// Buckets, objects, ListObjectsV2 and multipart uploads are
// github.com/johannesboyne/gofakes3 with its in-memory backend. gofakes3
// does not authenticate at all (v1.2.0 has no SigV4 code; it skips chunk
// signatures unread), so every request first passes this package's
// admission, which authenticates it, checks the key against the emulator,
// and hands gofakes3 a plain request: the payload decoded and verified,
// virtual-hosted addressing rewritten to path style, and the signing
// headers removed (gofakes3 would otherwise store every x-amz-* header as
// object metadata and echo it on GET).
//
// # Authentication
//
// Signatures are verified by re-signing the request with aws-sdk-go-v2's
// own SigV4 signer (aws/signer/v4) with the key's secret and comparing, in
// constant time: Signer.SignHTTP for the Authorization header,
// Signer.PresignHTTP for presigned URLs, and StreamSigner for the chunk
// signatures of STREAMING-AWS4-HMAC-SHA256-PAYLOAD bodies (its string to
// sign, with empty headers, is S3's chunk string to sign). The request is
// rebuilt from the headers the client signed and the path as sent on the
// wire, so nothing is escaped twice. Accepted payload hashes: a hex SHA-256
// (checked against the body), UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD
// and STREAMING-UNSIGNED-PAYLOAD-TRAILER; an x-amz-checksum-* header or
// trailer (crc32, crc32c, crc64nvme, sha1, sha256) is verified too. The
// signed-trailer and SigV4a variants answer 501 NotImplemented.
//
// # Answers
//
// Every refusal is an S3 XML error, <Error><Code/><Message/><RequestId/></Error>
// (HEAD: the status alone), with the request id also in x-amz-request-id:
//
//	no Authorization and no presigned query  403 AccessDenied
//	SigV2, or both header and query auth     400 InvalidRequest / InvalidArgument
//	malformed Authorization or credential    400 AuthorizationHeaderMalformed
//	malformed presigned query                400 AuthorizationQueryParametersError
//	key the emulator never minted            403 InvalidAccessKeyId
//	key younger than the propagation delay   403 InvalidAccessKeyId (as the unknown key: S3 cannot tell)
//	expired key                              403 ExpiredToken
//	revoked key                              403 AccessDenied "… has been revoked"
//	suspended key                            403 AccessDenied "… is suspended"
//	wrong signature (header, query or chunk) 403 SignatureDoesNotMatch
//	X-Amz-Date more than MaxSkew from Now    403 RequestTimeTooSkewed
//	presigned URL past X-Amz-Expires         403 AccessDenied "Request has expired"
//	a non-empty security token               400 InvalidToken (minted keys have none)
//	body not matching its hash or checksum   400 XAmzContentSHA256Mismatch / BadDigest
//	body longer than MaxBodyBytes            400 EntityTooLarge
//
// Key state is read through KeySource at every request, with Options.Now,
// which should be the emulator's clock: a key revoked or expired upstream
// is refused at once.
package s3plane
