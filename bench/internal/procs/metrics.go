package procs

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text exposition format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is a scrape.
type Metrics []Sample

// ParseMetrics reads the Prometheus text format (comments skipped). It is
// enough for what Sluice exports; timestamps, if any, are ignored.
func ParseMetrics(r io.Reader) (Metrics, error) {
	var out Metrics
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		smp, err := parseSample(line)
		if err != nil {
			return nil, err
		}
		out = append(out, smp)
	}
	return out, s.Err()
}

func parseSample(line string) (Sample, error) {
	smp := Sample{Labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(line, "{ "); i < 0 {
		return smp, fmt.Errorf("metrics: bad line %q", line)
	} else {
		smp.Name, rest = line[:i], line[i:]
	}
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " ,")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
				return smp, fmt.Errorf("metrics: bad labels in %q", line)
			}
			name := strings.TrimSpace(rest[:eq])
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for i := 0; i < len(rest); i++ {
				c := rest[i]
				if c == '\\' && i+1 < len(rest) {
					i++
					switch rest[i] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(rest[i])
					}
					continue
				}
				if c == '"' {
					rest, closed = rest[i+1:], true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return smp, fmt.Errorf("metrics: unterminated label value in %q", line)
			}
			smp.Labels[name] = val.String()
		}
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return smp, fmt.Errorf("metrics: no value in %q", line)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return smp, fmt.Errorf("metrics: value in %q: %w", line, err)
	}
	smp.Value = v
	return smp, nil
}

func (s Sample) matches(name string, match map[string]string) bool {
	if s.Name != name {
		return false
	}
	for k, v := range match {
		if s.Labels[k] != v {
			return false
		}
	}
	return true
}

// Sum adds the values of every sample of name whose labels include match.
func (m Metrics) Sum(name string, match map[string]string) float64 {
	var sum float64
	for _, s := range m {
		if s.matches(name, match) {
			sum += s.Value
		}
	}
	return sum
}

// Quantile estimates the q-quantile of histogram name (its _bucket series
// whose labels include match) the way Prometheus' histogram_quantile does:
// linear interpolation inside the bucket holding the rank. NaN if the
// histogram is empty; the highest finite bound if the rank falls in +Inf.
func (m Metrics) Quantile(q float64, name string, match map[string]string) float64 {
	counts := map[float64]float64{}
	for _, s := range m {
		if !s.matches(name+"_bucket", match) {
			continue
		}
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			continue
		}
		counts[le] += s.Value
	}
	type bucket struct{ le, n float64 }
	var bs []bucket
	for le, n := range counts {
		bs = append(bs, bucket{le, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].n
	prevLe, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLe
			}
			if b.n == prevN {
				return b.le
			}
			return prevLe + (b.le-prevLe)*(rank-prevN)/(b.n-prevN)
		}
		prevLe, prevN = b.le, b.n
	}
	return prevLe
}
