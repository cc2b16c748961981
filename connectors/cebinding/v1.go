package cebinding

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Cache remembers what consecutive events of one source usually repeat:
// the last source URI-reference parsed and the last content type found
// valid, so that a binding decoding a stream of events parses each only
// when it changes. It is safe for concurrent use (a miss replaces the
// entry atomically); the zero value is ready. A binding keeps one per
// source of events (a consumer, not per event).
type Cache struct {
	source      atomic.Pointer[parsedSource]
	mediaType   atomic.Pointer[string] // last content type found valid
	eventType   atomic.Pointer[string]
	contentType atomic.Pointer[string] // shared by events as their DataContentType
}

type parsedSource struct {
	raw string
	ref types.URIRef
}

// intern returns b as a string, the one in slot when it is equal (no
// allocation), after storing a new one otherwise.
func intern(slot *atomic.Pointer[string], b []byte) *string {
	if p := slot.Load(); p != nil && *p == string(b) {
		return p
	}
	s := string(b)
	slot.Store(&s)
	return &s
}

// SetTypeV1 sets the type attribute from a header value (trimmed, as
// sdk-go's SetType does), reusing the last type's string when it repeats.
func SetTypeV1(ec *event.EventContextV1, c *Cache, value []byte) {
	ec.Type = strings.TrimSpace(*intern(&c.eventType, value))
}

// SetContentTypeV1 sets datacontenttype from a binding's content-type
// field (trimmed; empty means none, as with sdk-go's setter). Events
// decoded with one Cache share the string: sdk-go's setters replace the
// pointer and never write through it.
func SetContentTypeV1(ec *event.EventContextV1, c *Cache, value []byte) {
	p := intern(&c.contentType, value)
	if ct := strings.TrimSpace(*p); ct != *p {
		_ = ec.SetDataContentType(ct) // cannot fail
		return
	}
	if *p == "" {
		ec.DataContentType = nil
		return
	}
	ec.DataContentType = p
}

// SetSourceV1 sets the source attribute from a header value: parsed as
// sdk-go's SetSource does (once while it repeats), and refused when it
// formats as blank (sdk-go's Validate would).
func SetSourceV1(ec *event.EventContextV1, c *Cache, value []byte) error {
	if p := c.source.Load(); p != nil && p.raw == string(value) {
		ec.Source = p.ref
		return nil
	}
	ref, err := c.sourceRef(string(value))
	if err != nil {
		return err
	}
	ec.Source = ref
	return nil
}

// sourceRef parses a source attribute as sdk-go's SetSource does, and
// refuses one that formats as blank (sdk-go's Validate would).
func (c *Cache) sourceRef(s string) (types.URIRef, error) {
	if p := c.source.Load(); p != nil && p.raw == s {
		return p.ref, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return types.URIRef{}, fmt.Errorf("source %q: %v", s, err)
	}
	ref := types.URIRef{URL: *u}
	if strings.TrimSpace(ref.String()) == "" {
		return types.URIRef{}, errors.New("source: REQUIRED")
	}
	c.source.Store(&parsedSource{raw: s, ref: ref})
	return ref, nil
}

// checkMediaType reports whether ct is an RFC 2046 media type, as sdk-go's
// Validate checks it.
func (c *Cache) checkMediaType(ct string) error {
	if p := c.mediaType.Load(); p != nil && *p == ct {
		return nil
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return fmt.Errorf("datacontenttype %q: %v", ct, err)
	}
	valid := ct // a copy, so that ct itself does not escape on a hit
	c.mediaType.Store(&valid)
	return nil
}

// SetAttributeV1 is SetAttribute for a CloudEvents 1.0 context, writing
// its fields directly (the Event setters re-parse and allocate on every
// call) and returning a bad source, id, data schema or time at once, where
// the setters leave it for Validate. The values end up as sdk-go's
// setters leave them (trimmed where they trim).
func SetAttributeV1(ec *event.EventContextV1, c *Cache, name, value string, hasContentType bool) error {
	switch name {
	case "specversion":
	case "id":
		if err := ec.SetID(value); err != nil {
			return fmt.Errorf("id: %v", err)
		}
	case "source":
		ref, err := c.sourceRef(value)
		if err != nil {
			return err
		}
		ec.Source = ref
	case "type":
		ec.Type = strings.TrimSpace(value)
	case "subject":
		_ = ec.SetSubject(value) // cannot fail
	case "dataschema", "schemaurl":
		if err := ec.SetDataSchema(value); err != nil {
			return fmt.Errorf("dataschema %q: %v", value, err)
		}
	case "datacontenttype":
		if !hasContentType {
			_ = ec.SetDataContentType(value) // cannot fail
		}
	case "time":
		t, err := types.ParseTime(value)
		if err != nil {
			return fmt.Errorf("time %q: %v", value, err)
		}
		_ = ec.SetTime(t) // cannot fail
	default:
		if err := ec.SetExtension(name, value); err != nil {
			return fmt.Errorf("extension %q: %v", name, err)
		}
	}
	return nil
}

// ValidateV1 checks a context built with SetAttributeV1 the way sdk-go's
// EventContextV1.Validate does (required id, source and type; a parsable
// datacontenttype and an absolute dataschema when present), with the
// media type checked through c. The error names the first problem found.
func ValidateV1(ec *event.EventContextV1, c *Cache) error {
	switch {
	case strings.TrimSpace(ec.ID) == "":
		return errors.New("id: MUST be a non-empty string")
	case ec.Source.URL == (url.URL{}):
		return errors.New("source: REQUIRED")
	case strings.TrimSpace(ec.Type) == "":
		return errors.New("type: MUST be a non-empty string")
	case ec.DataSchema != nil && !ec.DataSchema.Validate():
		return errors.New("dataschema: if present, MUST adhere to the format specified in RFC 3986, Section 4.3. Absolute URI")
	case ec.Subject != nil && strings.TrimSpace(*ec.Subject) == "":
		return errors.New("subject: if present, MUST be a non-empty string")
	}
	if ec.DataContentType != nil {
		ct := strings.TrimSpace(*ec.DataContentType)
		if ct == "" {
			return errors.New("datacontenttype: if present, MUST adhere to the format specified in RFC 2046")
		}
		return c.checkMediaType(ct)
	}
	return nil
}
