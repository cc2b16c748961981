package harness

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Report is what a scenario measured: tables for people, the same figures
// for machines (Summary, Runs), and the bars of BENCHMARKS.md judged.
type Report struct {
	Scenario string `json:"scenario"`
	Title    string `json:"title"`
	// Params is the configuration measured (events, partitions, concurrency…).
	Params map[string]any `json:"params"`
	// Tables are printed in order.
	Tables []Table `json:"tables"`
	// Bars are the pass/fail criteria of BENCHMARKS.md.
	Bars []Bar `json:"bars"`
	// Summary holds the headline figures (medians over runs, ratios).
	Summary any `json:"summary,omitempty"`
	// Runs holds every run's raw measurements.
	Runs any `json:"runs,omitempty"`
	// Notes explain what bounds a figure, what was not available, and so on.
	Notes []string `json:"notes,omitempty"`
}

// Table is a titled grid of already formatted cells.
type Table struct {
	Title  string     `json:"title"`
	Header []string   `json:"header"`
	Rows   [][]string `json:"rows"`
}

// BarStatus is the verdict on one bar.
type BarStatus string

// Bar verdicts.
const (
	Met          BarStatus = "met"
	Missed       BarStatus = "missed"
	NotAvailable BarStatus = "not available" // could not be measured; Note says why
)

// Bar is one criterion: what is wanted, what was measured, and the verdict.
type Bar struct {
	Name   string    `json:"name"`
	Want   string    `json:"want"`
	Got    string    `json:"got"`
	Status BarStatus `json:"status"`
	Note   string    `json:"note,omitempty"`
}

// Judge returns a bar whose status says whether ok holds.
func Judge(name, want, got string, ok bool) Bar {
	st := Missed
	if ok {
		st = Met
	}
	return Bar{Name: name, Want: want, Got: got, Status: st}
}

// Unavailable returns a bar that could not be measured, with the reason.
func Unavailable(name, want, why string) Bar {
	return Bar{Name: name, Want: want, Got: "—", Status: NotAvailable, Note: why}
}

// Render prints the report as text tables.
func (r *Report) Render(w io.Writer) {
	fmt.Fprintf(w, "\n== %s: %s\n", strings.ToUpper(r.Scenario), r.Title)
	for _, t := range r.Tables {
		fmt.Fprintln(w)
		t.Render(w)
	}
	if len(r.Bars) > 0 {
		bars := Table{Title: "Bars", Header: []string{"", "bar", "want", "got", "note"}}
		for _, b := range r.Bars {
			mark := map[BarStatus]string{Met: "MET", Missed: "MISSED", NotAvailable: "N/A"}[b.Status]
			bars.Rows = append(bars.Rows, []string{mark, b.Name, b.Want, b.Got, b.Note})
		}
		fmt.Fprintln(w)
		bars.Render(w)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
}

// Render prints the table with aligned columns.
func (t Table) Render(w io.Writer) {
	if t.Title != "" {
		fmt.Fprintln(w, t.Title)
	}
	widths := make([]int, len(t.Header))
	measure := func(row []string) {
		for i, c := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	measure(t.Header)
	for _, r := range t.Rows {
		measure(r)
	}
	line := func(row []string) {
		var b strings.Builder
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(t.Header)
	sep := make([]string, len(t.Header))
	for i := range sep {
		sep[i] = strings.Repeat("-", widths[i])
	}
	line(sep)
	for _, r := range t.Rows {
		line(r)
	}
}
