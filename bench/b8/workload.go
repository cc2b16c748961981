package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// The workload: a multi-tenant commerce platform's event bus (1,000
// tenants, 2,000 event types). Events carry the usual CloudEvents
// attributes plus a tenant extension and ~1 KiB of JSON order data with 15
// top-level fields; rules look like the ones tenants write: one
// discriminating field (event type, tenant, customer, subject or source
// prefix, SKU) refined by a few conditions on the data. Rule set n is the
// first n rules of one fixed sequence. The vocabularies are sized so that
// an event matches about two of the 10,000 rules: the matcher's work is
// proportional to the rules an event matches or partly matches, so a
// workload where that number grew with the rule count would measure the
// output, not the cost of the rule count (docs/patterns.md shows both).
// Every rule tests some data field, so every rule set pays for reading the
// data: the figures compare matching costs, not whether data is read.

type vocab struct {
	domains, entities, verbs []string
	services, regions        []string
	tiers, countries         []string
	currencies, statuses     []string
	channels, tags           []string
	tenants, customers, skus int
}

func newVocab() vocab {
	return vocab{
		domains:    []string{"orders", "billing", "shipping", "catalog", "users", "payments", "returns", "stock", "reviews", "support", "pricing", "promotions", "loyalty", "fraud", "tax", "invoicing", "warehouse", "delivery", "marketplace", "analytics"},
		entities:   []string{"order", "invoice", "parcel", "item", "account", "charge", "refund", "reservation", "review", "ticket", "coupon", "cart", "shipment", "customer", "product", "price", "payout", "dispute", "subscription", "session"},
		verbs:      []string{"created", "updated", "cancelled", "completed", "failed"},
		services:   []string{"checkout", "cart", "ledger", "courier", "warehouse", "pim", "identity", "psp", "rma", "helpdesk", "search", "pricing", "promo", "notify", "audit", "fraud", "tax", "report", "sync", "gateway"},
		regions:    []string{"eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1", "ap-northeast-1"},
		tiers:      []string{"bronze", "silver", "gold", "platinum"},
		countries:  []string{"DE", "FR", "US", "GB", "IN", "JP", "ES", "IT", "NL", "PL"},
		currencies: []string{"EUR", "USD", "GBP", "JPY", "INR"},
		statuses:   []string{"new", "open", "paid", "shipped", "cancelled", "refunded"},
		channels:   []string{"web", "mobile-ios", "mobile-android", "store", "partner-api"},
		tags:       []string{"gift", "express", "fragile", "bulk", "b2b", "promo", "preorder"},
		tenants:    1000,
		customers:  20000,
		skus:       10000,
	}
}

func (v vocab) eventType(r *rand.Rand) string {
	return fmt.Sprintf("com.acme.%s.%s.%s", pick(r, v.domains), pick(r, v.entities), pick(r, v.verbs))
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// events builds n events of about 1 KiB each.
func (v vocab) events(seed uint64, n int) ([]*cloudevents.Event, error) {
	r := rand.New(rand.NewPCG(seed, 1))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]*cloudevents.Event, n)
	for i := range out {
		e := cloudevents.NewEvent()
		region := pick(r, v.regions)
		cust := fmt.Sprintf("cust-%05d", r.IntN(v.customers))
		order := fmt.Sprintf("ord-%08d", r.IntN(100_000_000))
		e.SetID(fmt.Sprintf("%016x-%04d", r.Uint64(), i))
		e.SetSource(fmt.Sprintf("/acme/%s/%s", pick(r, v.services), region))
		e.SetType(v.eventType(r))
		e.SetSubject("orders/" + cust + "/" + order)
		e.SetTime(base.Add(time.Duration(r.IntN(86400*30)) * time.Second))
		e.SetExtension("tenant", fmt.Sprintf("t-%03d", r.IntN(v.tenants)))
		e.SetExtension("traceparent", fmt.Sprintf("00-%016x%016x-%016x-01", r.Uint64(), r.Uint64(), r.Uint64()))
		items := []any{}
		for range 1 + r.IntN(3) {
			items = append(items, map[string]any{
				"sku":   fmt.Sprintf("sku-%04d", r.IntN(v.skus)),
				"qty":   1 + r.IntN(5),
				"price": float64(r.IntN(50000)) / 100,
			})
		}
		var tags []any
		for range r.IntN(3) {
			tags = append(tags, pick(r, v.tags))
		}
		data := map[string]any{
			"orderId": order,
			"customer": map[string]any{
				"id":      cust,
				"tier":    pick(r, v.tiers),
				"country": caseVariant(r, pick(r, v.countries)),
				"email":   fmt.Sprintf("%s@example.com", cust),
			},
			"amount":    float64(r.IntN(200000)) / 100,
			"currency":  pick(r, v.currencies),
			"status":    pick(r, v.statuses),
			"items":     items,
			"channel":   pick(r, v.channels),
			"region":    region,
			"clientIp":  fmt.Sprintf("10.%d.%d.%d", r.IntN(8), r.IntN(256), r.IntN(256)),
			"createdAt": base.Add(time.Duration(r.IntN(86400*30)) * time.Second).Format(time.RFC3339),
			"priority":  1 + r.IntN(5),
			"tags":      tags,
			"notes":     "",
		}
		if r.IntN(10) < 3 {
			data["coupon"] = fmt.Sprintf("SAVE%d", 5*(1+r.IntN(4)))
		}
		// Pad the notes so that the whole event is about 1 KiB.
		probe := e.Clone()
		if err := probe.SetData(cloudevents.ApplicationJSON, data); err != nil {
			return nil, err
		}
		size, err := eventSize(&probe)
		if err != nil {
			return nil, err
		}
		if pad := 1024 - size; pad > 0 {
			data["notes"] = strings.Repeat("lorem ipsum ", pad/12+1)[:pad]
		}
		if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
			return nil, err
		}
		out[i] = &e
	}
	return out, nil
}

// eventSize is the size of the event in the structured JSON format.
func eventSize(e *cloudevents.Event) (int, error) {
	b, err := json.Marshal(e)
	return len(b), err
}

func caseVariant(r *rand.Rand, s string) string {
	switch r.IntN(3) {
	case 0:
		return strings.ToLower(s)
	case 1:
		return s[:1] + strings.ToLower(s[1:])
	}
	return s
}

// rules returns n rule patterns as JSON text, the first n of one sequence.
func (v vocab) rules(seed uint64, n int) ([]string, error) {
	r := rand.New(rand.NewPCG(seed, 2))
	out := make([]string, n)
	for i := range out {
		rule := map[string]any{}
		data := map[string]any{}
		customer := map[string]any{}
		switch k := r.IntN(100); {
		case k < 50:
			rule["type"] = []any{v.eventType(r)}
		case k < 65:
			rule["tenant"] = []any{fmt.Sprintf("t-%03d", r.IntN(v.tenants))}
		case k < 75:
			customer["id"] = []any{fmt.Sprintf("cust-%05d", r.IntN(v.customers))}
		case k < 85:
			rule["subject"] = []any{map[string]any{"prefix": fmt.Sprintf("orders/cust-%05d/", r.IntN(v.customers))}}
		case k < 90:
			data["items"] = map[string]any{"sku": []any{fmt.Sprintf("sku-%04d", r.IntN(v.skus))}}
		case k < 95:
			rule["type"] = []any{map[string]any{"prefix": fmt.Sprintf("com.acme.%s.%s.", pick(r, v.domains), pick(r, v.entities))}}
		default:
			rule["source"] = []any{map[string]any{"prefix": fmt.Sprintf("/acme/%s/", pick(r, v.services))}}
			rule["tenant"] = []any{fmt.Sprintf("t-%03d", r.IntN(v.tenants))}
		}
		// Every rule tests the data as well as its discriminating field
		// (B8 is about patterns on attributes and data): one to three
		// refinements, drawn with replacement.
		for range 1 + r.IntN(3) {
			switch r.IntN(11) {
			case 0:
				lo := r.IntN(1500)
				data["amount"] = []any{map[string]any{"numeric": []any{">=", lo, "<", lo + 100 + r.IntN(1000)}}}
			case 1:
				data["status"] = []any{map[string]any{"anything-but": []any{pick(r, v.statuses), pick(r, v.statuses)}}}
			case 2:
				data["coupon"] = []any{map[string]any{"exists": r.IntN(2) == 0}}
			case 3:
				customer["country"] = []any{map[string]any{"equals-ignore-case": pick(r, v.countries)}}
				customer["tier"] = []any{pick(r, v.tiers), pick(r, v.tiers)}
			case 4:
				data["currency"] = []any{pick(r, v.currencies)}
			case 5:
				data["channel"] = []any{map[string]any{"anything-but": map[string]any{"prefix": pick(r, []string{"mobile", "partner", "store"})}}}
			case 6:
				data["clientIp"] = []any{map[string]any{"cidr": fmt.Sprintf("10.%d.0.0/16", r.IntN(8))}}
			case 7:
				data["priority"] = []any{map[string]any{"numeric": []any{">=", 1 + r.IntN(5)}}}
			case 8:
				data["tags"] = []any{pick(r, v.tags)}
			case 9:
				data["region"] = []any{map[string]any{"suffix": pick(r, []string{"-1", "-2"})}}
			case 10:
				data["$or"] = []any{
					map[string]any{"status": []any{pick(r, v.statuses)}},
					map[string]any{"amount": []any{map[string]any{"numeric": []any{">", 1000 + r.IntN(1000)}}}},
				}
			}
		}
		if len(customer) > 0 {
			data["customer"] = customer
		}
		if len(data) > 0 {
			rule["data"] = data
		}
		b, err := json.Marshal(rule)
		if err != nil {
			return nil, err
		}
		out[i] = string(b)
	}
	return out, nil
}
