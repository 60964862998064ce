package cwapitest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// SAMLRoleAttribute is the SAML attribute whose value becomes the role in
// the principal "saml/<role>".
const SAMLRoleAttribute = "https://coreweave.com/SAML/Attributes/Role"

// SAMLPrincipalAttribute is the SAML attribute naming the user.
const SAMLPrincipalAttribute = "https://coreweave.com/SAML/Attributes/PrincipalName"

const maxRoleLen = 256

// jwtClaims are the validated claims of an OIDC token.
type jwtClaims struct {
	iss, sub string
	aud      []string
}

// hasAudience reports whether want is among the token's audiences; an
// empty want accepts any audience.
func (c jwtClaims) hasAudience(want string) bool {
	if want == "" {
		return true
	}
	for _, a := range c.aud {
		if a == want {
			return true
		}
	}
	return false
}

// parseClaims reads the claims of a verified token's payload and checks
// them at now. Errors are for tests only: replies say "Invalid token".
func parseClaims(payload []byte, now time.Time) (jwtClaims, error) {
	var p struct {
		Iss *string         `json:"iss"`
		Sub *string         `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return jwtClaims{}, errors.New("payload is not a JSON object of claims")
	}
	if p.Iss == nil || *p.Iss == "" || p.Sub == nil || *p.Sub == "" {
		return jwtClaims{}, errors.New("missing iss or sub")
	}
	c := jwtClaims{iss: *p.Iss, sub: *p.Sub}
	var one string
	if err := json.Unmarshal(p.Aud, &one); err == nil {
		c.aud = []string{one}
	} else if err := json.Unmarshal(p.Aud, &c.aud); err != nil || len(c.aud) == 0 {
		return jwtClaims{}, errors.New("aud is not a string or array of strings")
	}
	nowSecs := float64(now.UnixNano()) / 1e9
	if exp, ok := numericDate(p.Exp); !ok || exp <= nowSecs {
		return jwtClaims{}, errors.New("exp missing or not in the future")
	}
	if p.Nbf != nil {
		if nbf, ok := numericDate(p.Nbf); !ok || nbf > nowSecs {
			return jwtClaims{}, errors.New("nbf invalid or in the future")
		}
	}
	return c, nil
}

// numericDate reads a JWT NumericDate: a JSON number, not a string.
func numericDate(raw json.RawMessage) (float64, bool) {
	if len(raw) == 0 || raw[0] == '"' || string(raw) == "null" {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

// samlRole decodes a base64 SAML response and returns the value of its
// role attribute. Errors name what is wrong without quoting the input.
func samlRole(b64 string) (string, error) {
	b64 = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1 // SAML responses are often line-wrapped
		}
		return r
	}, b64)
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", errors.New("not standard base64")
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	var (
		depth            int
		rootSeen, inRole bool
		inValue          bool
		role             strings.Builder
		found            bool
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", errors.New("not well-formed XML")
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if rootSeen {
					return "", errors.New("more than one root element")
				}
				rootSeen = true
				if t.Name.Local != "Response" && t.Name.Local != "Assertion" {
					return "", errors.New("root element is not a SAML Response or Assertion")
				}
			}
			depth++
			switch t.Name.Local {
			case "Attribute":
				inRole = !found && attr(t, "Name") == SAMLRoleAttribute
			case "AttributeValue":
				inValue = inRole && !found
			}
		case xml.EndElement:
			depth--
			switch t.Name.Local {
			case "Attribute":
				inRole = false
			case "AttributeValue":
				if inValue {
					inValue, found = false, true
				}
			}
		case xml.CharData:
			if inValue && role.Len() <= maxRoleLen {
				role.Write(t)
			}
		}
	}
	if !rootSeen {
		return "", errors.New("no XML element")
	}
	r := strings.TrimSpace(role.String())
	switch {
	case !found || r == "":
		return "", errors.New("no " + SAMLRoleAttribute + " attribute value")
	case len(r) > maxRoleLen || strings.IndexFunc(r, unicode.IsControl) >= 0:
		return "", errors.New("role is too long or has control characters")
	}
	return r, nil
}

func attr(e xml.StartElement, name string) string {
	for _, a := range e.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// MakeSAMLResponse returns a base64 SAML Response, for tests and the demo,
// whose assertion carries the role and principal attributes the emulator
// reads. It is not signed.
func MakeSAMLResponse(role, principal string) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` +
		`<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_emulator" Version="2.0">` +
		`<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>` +
		`<saml:Assertion ID="_emulator-assertion" Version="2.0"><saml:Subject><saml:NameID>`)
	xmlText(&b, principal)
	b.WriteString(`</saml:NameID></saml:Subject><saml:AttributeStatement>`)
	for _, a := range [...][2]string{{SAMLRoleAttribute, role}, {SAMLPrincipalAttribute, principal}} {
		b.WriteString(`<saml:Attribute Name="` + a[0] + `"><saml:AttributeValue>`)
		xmlText(&b, a[1])
		b.WriteString(`</saml:AttributeValue></saml:Attribute>`)
	}
	b.WriteString(`</saml:AttributeStatement></saml:Assertion></samlp:Response>`)
	return base64.StdEncoding.EncodeToString([]byte(b.String()))
}

func xmlText(b *strings.Builder, s string) {
	_ = xml.EscapeText(b, []byte(s)) // a strings.Builder never fails
}
