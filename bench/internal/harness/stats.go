package harness

import (
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Median returns the median of xs, ignoring NaNs; NaN if none is left.
func Median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Ratios divides a[i] by b[i] (NaN where b[i] is 0 or either is NaN).
func Ratios(a, b []float64) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		if b[i] == 0 {
			out[i] = math.NaN()
			continue
		}
		out[i] = a[i] / b[i]
	}
	return out
}

// Min returns the element-wise minimum of a and b.
func Min(a, b []float64) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		out[i] = math.Min(a[i], b[i])
	}
	return out
}

// F formats x with the given decimals; "—" for NaN.
func F(x float64, decimals int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", decimals, x)
}

// Rate formats an events-per-second figure without decimals, "—" for NaN.
func Rate(x float64) string { return F(x, 0) }

// Spread formats the median with the range of runs: "1234 (1100–1300)".
func Spread(xs []float64, decimals int) string {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return "—"
	}
	if len(v) == 1 {
		return F(v[0], decimals)
	}
	return fmt.Sprintf("%s (%s–%s)", F(Median(v), decimals), F(slices.Min(v), decimals), F(slices.Max(v), decimals))
}

// Num is a figure for JSON: NaN and ±Inf (not measured) encode as null,
// which encoding/json refuses to do for a plain float64.
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return []byte(strconv.FormatFloat(f, 'g', 6, 64)), nil
}

// Nums converts a slice for JSON.
func Nums(xs []float64) []Num {
	out := make([]Num, len(xs))
	for i, x := range xs {
		out[i] = Num(x)
	}
	return out
}
