package servicefile

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"unicode/utf8"

	goyaml "go.yaml.in/yaml/v2"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// A large file parsed whole costs many times its size: the YAML parser's
// node tree, the generic value decoded from it, that value converted for
// JSON, the JSON text and the tree decoded from it again, all alive at once
// (a 10 MB file of 50,000 services peaked at over 300 MiB). parseEntries
// instead cuts the text of the file into its `services` entries and gives
// each entry, on its own, to the same YAML parser and the same conversion
// as parseWhole, so it never holds more than one entry's trees.
//
// It takes only files of a plain shape, where the cut is certain to give
// each entry exactly the text and the context it has in the whole file:
//
//   - YAML: blank and comment lines, an optional `---`, then `services:` at
//     the start of a line and a block sequence under it; the entries are
//     the lines from one `- ` at the sequence's indentation to the next;
//     after the sequence only document markers, blank and comment lines;
//   - JSON: an object with the single key "services" and a non-empty list.
//
// and it gives up, leaving the file to parseWhole, on anything that could
// make an entry mean something else alone than in the file: a possible
// alias (YAML's only reference between entries, and what the alias-bomb
// limit counts over the whole document), a line break other than \n or
// \r\n, a byte-order mark, or any error at all: a YAML syntax error, a
// duplicate key, a value JSON cannot hold. So the errors parseWhole
// reports, with their line numbers, come from parseWhole itself, and so
// does everything about files of other shapes: empty files, `services: []`,
// several documents, flow-style lists.
//
// Each entry is parsed as the file "services:\n<entry>" (YAML) or
// {"services": [<entry>]} (JSON), so it sits as deep as in the whole file
// and the parsers' depth limits fall the same way.
func parseEntries(data []byte) (svcs []loadbalancer.Service, ok bool, err error) {
	if !plainBreaks(data) {
		return nil, false, nil
	}
	var s docStream
	entries, ok := splitJSON(data)
	if ok {
		s = docStream{prefix: `{"services": [`, suffix: "]}\n---\n", lastSuffix: "]}"}
	} else if entries, ok = splitYAML(data); ok && noAlias(data) {
		// Every entry but the last ends with a line break already.
		s = docStream{prefix: "services:\n", suffix: "---\n"}
	} else {
		return nil, false, nil
	}
	p := &problems{}
	c := newCollector(p)
	s.data, s.entries = data, entries
	dec := goyaml.NewDecoder(&s)
	dec.SetStrict(true)
	for i := range entries {
		item, ok := decodeEntry(dec)
		if !ok {
			return nil, false, nil
		}
		c.add(i, item)
	}
	if err := p.err(); err != nil {
		return nil, true, err
	}
	return c.out, true, nil
}

// span is the text of one entry, data[start:end].
type span struct{ start, end int }

// plainBreaks tells that data has no line breaks but \n and \r\n (YAML
// also breaks lines at a lone \r, NEL, LS and PS) and no byte-order mark.
func plainBreaks(data []byte) bool {
	for _, s := range []string{"\xc2\x85", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xef\xbb\xbf"} {
		if bytes.Contains(data, []byte(s)) {
			return false
		}
	}
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '\r')
		if j < 0 {
			break
		}
		i += j + 1
		if i == len(data) || data[i] != '\n' {
			return false
		}
	}
	return true
}

// noAlias tells that YAML data has no '*' outside whole-line comments, so
// no alias. (JSON has none outside strings.)
func noAlias(data []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '*')
		if j < 0 {
			return true
		}
		j += i
		line := bytes.TrimLeft(data[bytes.LastIndexByte(data[:j], '\n')+1:j], " \t")
		if len(line) == 0 || line[0] != '#' {
			return false
		}
		// The rest of this comment line is no alias either.
		nl := bytes.IndexByte(data[j:], '\n')
		if nl < 0 {
			return true
		}
		i = j + nl
	}
}

// splitYAML returns the entries of a YAML file of the plain shape.
func splitYAML(data []byte) ([]span, bool) {
	const (
		header  = iota // before `services:`
		key            // after it, before the first entry
		entries        // in the sequence
		trailer        // after a document marker ending the sequence
	)
	var out []span
	state, indent, started := header, 0, false
	for off := 0; off < len(data); {
		next := len(data)
		line := data[off:]
		if nl := bytes.IndexByte(line, '\n'); nl >= 0 {
			next = off + nl + 1
			line = line[:nl]
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		rest := bytes.TrimLeft(line, " ")
		sp := len(line) - len(rest)
		skip := len(rest) == 0 || rest[0] == '#' // blank or comment
		entry := len(rest) > 0 && rest[0] == '-' && (len(rest) == 1 || rest[1] == ' ')
		marker := sp == 0 && (bare(line, "---") || bare(line, "..."))
		inEntry := false
		switch {
		case state == header && skip:
		case state == header && !started && sp == 0 && bare(line, "---"):
			started = true
		case state == header && sp == 0 && bare(line, "services:"):
			state = key
		case state == key && skip:
		case state == key && entry:
			state, indent, inEntry = entries, sp, true
			out = append(out, span{start: off})
		case state == entries && (skip || sp > indent):
			inEntry = true
		case state == entries && sp == indent && entry:
			inEntry = true
			out[len(out)-1].end = off
			out = append(out, span{start: off})
		case state == entries && marker:
			out[len(out)-1].end = off
			state = trailer
		case state == trailer && (skip || marker):
		default:
			return nil, false
		}
		// The parser reads the entries; the rest it would read too, and
		// refuse for a character YAML does not allow, even in a comment.
		if !inEntry && !yamlChars(line) {
			return nil, false
		}
		off = next
	}
	switch state {
	case entries:
		out[len(out)-1].end = len(data)
	case trailer:
	default:
		return nil, false
	}
	return out, true
}

// yamlChars tells that go.yaml.in/yaml/v2 reads text without an error: it
// is UTF-8 of the characters YAML allows (tab, line breaks, printable).
func yamlChars(text []byte) bool {
	for len(text) > 0 {
		r, n := utf8.DecodeRune(text)
		switch {
		case r == utf8.RuneError && n == 1:
			return false
		case r == '\t', r == '\n', r == '\r', r >= 0x20 && r <= 0x7e, r == 0x85,
			r >= 0xa0 && r <= 0xd7ff, r >= 0xe000 && r <= 0xfffd, r >= 0x10000:
		default:
			return false
		}
		text = text[n:]
	}
	return true
}

// bare tells that line is word, then at most spaces and a comment.
func bare(line []byte, word string) bool {
	rest, ok := bytes.CutPrefix(line, []byte(word))
	if !ok {
		return false
	}
	trimmed := bytes.TrimLeft(rest, " ")
	return len(trimmed) == 0 || trimmed[0] == '#' && len(trimmed) < len(rest)
}

// splitJSON returns the entries of a JSON file of the plain shape: valid
// JSON, {"services": [...]} with at least one entry, and between its
// tokens only spaces and line breaks (no tabs, which YAML does not take
// everywhere JSON does), and no line break between "services" and its ':'
// (where YAML wants the key and the ':' on one line).
func splitJSON(data []byte) ([]span, bool) {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '{' || !json.Valid(data) {
		return nil, false
	}
	i = skipSpace(data, i+1)
	key, ok := bytes.CutPrefix(data[i:], []byte(`"services"`))
	if !ok {
		return nil, false
	}
	i = len(data) - len(bytes.TrimLeft(key, " "))
	if data[i] != ':' {
		return nil, false
	}
	i = skipSpace(data, i+1)
	if data[i] != '[' {
		return nil, false
	}
	var out []span
	for {
		i = skipSpace(data, i+1)
		if data[i] == ']' && len(out) == 0 {
			return nil, false
		}
		end := jsonValueEnd(data, i)
		out = append(out, span{start: i, end: end})
		i = skipSpace(data, end)
		if data[i] == ']' {
			break
		}
		if data[i] != ',' {
			return nil, false
		}
	}
	i = skipSpace(data, i+1)
	if data[i] != '}' {
		return nil, false
	}
	return out, skipSpace(data, i+1) == len(data)
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// jsonValueEnd returns where the JSON value at data[i] ends; data is valid
// JSON.
func jsonValueEnd(data []byte, i int) int {
	depth := 0
	for ; i < len(data); i++ {
		switch data[i] {
		case '"':
			for i++; data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// docStream reads as a stream of YAML documents, one per entry: prefix,
// the entry, then suffix, which ends the document with a marker line, or
// lastSuffix after the last entry. Nothing else is added: an empty line
// more after an entry would change a block scalar that keeps its final
// line breaks (`|+`), so the last entry is left as it ends the file. One
// decoder reads them all, so the parser's buffers serve every entry.
type docStream struct {
	data                       []byte
	entries                    []span
	prefix, suffix, lastSuffix string
	next                       int    // entry to read next
	pending                    []byte // rest of the current piece
	piece                      int    // 0 prefix, 1 entry, 2 suffix
}

func (s *docStream) Read(b []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.next == len(s.entries) {
			return 0, io.EOF
		}
		e := s.entries[s.next]
		switch s.piece {
		case 0:
			s.pending = []byte(s.prefix)
		case 1:
			s.pending = s.data[e.start:e.end]
		case 2:
			if s.next+1 < len(s.entries) {
				s.pending = []byte(s.suffix)
			} else {
				s.pending = []byte(s.lastSuffix)
			}
			s.next++
		}
		s.piece = (s.piece + 1) % 3
	}
	n := copy(b, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

// decodeEntry decodes the next document of a docStream, a file of one
// service, as parseWhole would and returns the service's entry as a
// generic JSON value.
func decodeEntry(dec *goyaml.Decoder) (any, bool) {
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	top, ok := v.(map[any]any)
	if !ok || len(top) != 1 {
		return nil, false
	}
	list, ok := top["services"].([]any)
	if !ok || len(list) != 1 {
		return nil, false
	}
	return jsonValue(list[0], 2)
}

// maxDepth bounds the nesting jsonValue converts, well within the 10,000
// levels encoding/json decodes.
const maxDepth = 1000

// jsonValue converts a value decoded by go.yaml.in/yaml/v2 into what
// parseWhole gets for it after sigs.k8s.io/yaml's conversion to JSON and
// decoding with json.Decoder.UseNumber: map keys become strings, numbers
// json.Number as json.Marshal writes them, strings valid UTF-8. ok is false
// for anything that conversion would refuse or that could come out
// differently: an unsupported key or value, a number JSON cannot hold, two
// keys that become the same string.
func jsonValue(v any, depth int) (any, bool) {
	switch v := v.(type) {
	case nil:
		return nil, true
	case bool:
		return v, true
	case string:
		return jsonString(v), true
	case int:
		return json.Number(strconv.Itoa(v)), true
	case int64:
		return json.Number(strconv.FormatInt(v, 10)), true
	case uint64:
		return json.Number(strconv.FormatUint(v, 10)), true
	case float64:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, false
		}
		return json.Number(b), true
	case []any:
		if depth >= maxDepth {
			return nil, false
		}
		for i, e := range v { // in place: the list is ours
			var ok bool
			if v[i], ok = jsonValue(e, depth+1); !ok {
				return nil, false
			}
		}
		return v, true
	case map[any]any:
		if depth >= maxDepth {
			return nil, false
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			key, ok := jsonKey(k)
			if !ok {
				return nil, false
			}
			if _, dup := out[key]; dup {
				return nil, false
			}
			if out[key], ok = jsonValue(e, depth+1); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}

// jsonKey is sigs.k8s.io/yaml's conversion of a map key to a string.
func jsonKey(k any) (string, bool) {
	switch k := k.(type) {
	case string:
		return jsonString(k), true
	case int:
		return strconv.Itoa(k), true
	case int64:
		return strconv.FormatInt(k, 10), true
	case float64:
		s := strconv.FormatFloat(k, 'g', -1, 32)
		switch s {
		case "+Inf":
			s = ".inf"
		case "-Inf":
			s = "-.inf"
		case "NaN":
			s = ".nan"
		}
		return s, true
	case bool:
		return strconv.FormatBool(k), true
	}
	return "", false
}

// jsonString is s after a round trip through JSON, which replaces every
// byte that is not UTF-8 with U+FFFD.
func jsonString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}
