package pipelines

import "bytes"

// chunk is the text of one YAML document of a stream, and the 1-based line
// of the stream it starts at.
type chunk struct {
	text []byte
	line int
}

// splitDocuments cuts a YAML stream into documents at "---" and "..."
// marker lines, so that each is parsed on its own. goccy/go-yaml v1.19.2
// silently drops the document that follows an empty or comment-only one
// (goccy/go-yaml#870); parsing documents apart also lets one document's
// syntax error leave the others checked. Markers at column 1 are never
// content in YAML, so the cut is exact. Directives, comments and blank
// lines before a "---" stay with the document it starts.
func splitDocuments(data []byte) []chunk {
	var chunks []chunk
	start, startLine := 0, 1
	onlyPreamble := true // the current chunk holds no content line yet
	line := 1
	for off := 0; off < len(data); line++ {
		end := bytes.IndexByte(data[off:], '\n')
		next := len(data)
		if end >= 0 {
			next = off + end + 1
		}
		text := data[off:next]
		switch {
		case isMarker(text, "---"):
			if !onlyPreamble {
				chunks = append(chunks, chunk{data[start:off], startLine})
				start, startLine = off, line
			}
			onlyPreamble = false
		case isMarker(text, "..."):
			chunks = append(chunks, chunk{data[start:next], startLine})
			start, startLine = next, line+1
			onlyPreamble = true
		default:
			trimmed := bytes.TrimSpace(text)
			if len(trimmed) > 0 && trimmed[0] != '#' && !(text[0] == '%' && onlyPreamble) {
				onlyPreamble = false
			}
		}
		off = next
	}
	if start < len(data) {
		chunks = append(chunks, chunk{data[start:], startLine})
	}
	return chunks
}

// isMarker reports whether line is the document marker m, alone or followed
// by white space.
func isMarker(line []byte, m string) bool {
	rest, ok := bytes.CutPrefix(line, []byte(m))
	return ok && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\n' || rest[0] == '\r')
}
