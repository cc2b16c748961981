package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers (https://www.standardwebhooks.com).
const (
	HeaderID        = "Webhook-Id"
	HeaderTimestamp = "Webhook-Timestamp"
	HeaderSignature = "Webhook-Signature"
)

// Tolerance is how far a webhook-timestamp may be from the verifier's
// clock (replay protection), as the spec recommends.
const Tolerance = 5 * time.Minute

// Verify errors.
var (
	ErrMissingHeaders = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	ErrTimestamp      = errors.New("webhook-timestamp outside the tolerance")
	ErrSignature      = errors.New("no matching signature")
)

const secretPrefix = "whsec_"

// parseSecret returns the HMAC key: the base64 payload of a "whsec_" secret,
// or the bytes of any other string.
func parseSecret(secret string) ([]byte, error) {
	if !strings.HasPrefix(secret, secretPrefix) {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(secret[len(secretPrefix):])
	if err != nil {
		return nil, fmt.Errorf("webhook secret: whsec_ secret is not base64: %w", err)
	}
	if len(key) == 0 {
		return nil, errors.New("webhook secret: empty key")
	}
	return key, nil
}

// sign returns the webhook-signature value "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>".
func sign(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Verify checks a signed request as a receiver would: the headers are
// present, the timestamp is within Tolerance of now, and one of the
// space-separated v1 signatures matches. secret is in the form Config takes.
func Verify(secret string, header http.Header, body []byte) error {
	return verify(secret, header, body, time.Now())
}

func verify(secret string, header http.Header, body []byte, now time.Time) error {
	key, err := parseSecret(secret)
	if err != nil {
		return err
	}
	id, tsv, sigs := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || tsv == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsv, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not unix seconds", ErrTimestamp, tsv)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("%w: %v off", ErrTimestamp, d)
	}
	want := []byte(sign(key, id, ts, body))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrSignature
}
