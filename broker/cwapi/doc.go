// Package cwapi is the client of the CoreWeave credential API
// (api.coreweave.com): the four minting endpoints and key revocation, the
// typed errors upstream replies become (APIError), and the reading of the
// upstream credential files a mint sends (ReadTokenFileWith, with its owner
// and mode rules). A MintSpec says what one profile's mint needs; Client.Minter
// and Client.Revoker turn it into the Minter and Revoker a cache calls.
//
// Client never retries a mint by itself, since mints are not idempotent;
// retry policy belongs to the caller (package broker's Cache). Package
// cwapitest is its test double: an in-process emulator of the API.
//
// Nothing in this package logs or returns a secret in an error: Credentials
// redact themselves, and API error messages have request tokens scrubbed.
package cwapi
