//! A YAML document as a tree of nodes that all carry their source span.
//!
//! The typed format is built from this tree by [`crate::convert`] rather than by
//! `#[derive(Deserialize)]`: serde stops at the first error, while a runbook author
//! wants every problem in the file at once, each with its own location.
//!
//! The tree is read straight from the event stream of `granit-parser`, the YAML parser
//! serde-saphyr is built on (and re-exports). Deserialising `Spanned<T>` through serde
//! costs about twice as much as parsing itself, and the spans here are all the
//! converter needs. Scalars resolve as serde-saphyr resolves them for a typeless value:
//! the YAML 1.2 core schema with YAML 1.1 booleans (`yes`/`no`/`on`/`off`), so files mean
//! the same as they did when read through serde.

use std::collections::{HashMap, HashSet};

use serde_saphyr::granit_parser::{self, Event, Marker, ScalarStyle, ScanError, Tag};

use crate::diag::Span;

/// One YAML value with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the value is.
    pub value: Value,
    /// Where it is in the source.
    pub span: Span,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer scalar.
    Int(i64),
    /// A floating point scalar.
    Float(f64),
    /// A string scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order. Keys are strings with their own spans.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key is in the source.
    pub span: Span,
}

impl Value {
    /// A short noun for messages: "a string", "a mapping", ...
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The value as JSON, dropping spans (used for defaults and plan output).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.name.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// How many values aliases may expand to in one file: a guard against "billion laughs"
/// documents, far above anything a runbook needs.
const ALIAS_EXPANSION_LIMIT: usize = 1_000_000;

/// Parse YAML text into a spanned tree. Errors carry the parser's location.
pub fn parse(source: &str) -> Result<Node, (String, Span)> {
    let mut builder = Builder::default();
    feed(&mut builder, source, parser(source))?;
    Ok(builder.finish())
}

/// Like [`parse`], but each item of the top-level `steps` list is handed to `on_step`
/// (with its index) as soon as it is read, instead of being kept in the tree.
///
/// The YAML parser runs on a second thread while the caller's thread builds the tree
/// and works on the steps, so on a big runbook checking the steps costs almost nothing
/// on top of parsing. Without a thread to be had, everything runs on the caller's.
pub fn parse_streaming_steps(
    source: &str,
    on_step: &mut dyn FnMut(usize, Node),
) -> Result<Node, (String, Span)> {
    let mut builder = Builder {
        on_step: Some(on_step),
        ..Builder::default()
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch<'_>>(4);
        let reader = std::thread::Builder::new()
            .name("yaml-reader".into())
            .spawn_scoped(scope, move || {
                let mut batch = Vec::with_capacity(BATCH);
                for next in parser(source) {
                    let failed = next.is_err();
                    batch.push(next);
                    if failed || batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // A send fails when the builder stopped at an error of its own.
                        if tx.send(full).is_err() || failed {
                            return;
                        }
                    }
                }
                let _ = tx.send(batch);
            });
        match reader {
            Ok(_) => feed(&mut builder, source, rx.into_iter().flatten()),
            Err(_) => feed(&mut builder, source, parser(source)),
        }
    })?;
    Ok(builder.finish())
}

/// Events handed from the parser thread at a time.
const BATCH: usize = 2048;

type Item<'a> = Result<(Event<'a>, granit_parser::Span), ScanError>;
type Batch<'a> = Vec<Item<'a>>;

fn parser(source: &str) -> granit_parser::Parser<'_, granit_parser::StrInput<'_>> {
    let mut options = granit_parser::Options::default();
    // Comments are never read; not capturing them saves time on big files.
    options.emit_comments = false;
    granit_parser::Parser::new_from_str_with_options(source, options)
}

/// Build from events until the end or the first error.
fn feed<'a>(
    builder: &mut Builder<'_>,
    source: &'a str,
    events: impl Iterator<Item = Item<'a>>,
) -> Result<(), (String, Span)> {
    for next in events {
        let (event, span) = next.map_err(|err| scan_error(source, &err))?;
        builder.event(event, to_span(source, span))?;
    }
    Ok(())
}

fn scan_error(source: &str, err: &ScanError) -> (String, Span) {
    let span = marker_span(source, err.marker(), err.marker());
    (err.info(), span)
}

fn to_span(source: &str, span: granit_parser::Span) -> Span {
    marker_span(source, &span.start, &span.end)
}

fn marker_span(source: &str, start: &Marker, end: &Marker) -> Span {
    let line = u32::try_from(start.line()).unwrap_or(u32::MAX).max(1);
    let column = u32::try_from(start.col())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let offset = start
        .byte_offset()
        .unwrap_or_else(|| line_col_to_offset(source, line, column))
        .min(source.len());
    let end = end
        .byte_offset()
        .unwrap_or(offset)
        .clamp(offset, source.len());
    Span {
        offset,
        len: end - offset,
        line,
        column,
    }
}

fn line_col_to_offset(source: &str, line: u32, column: u32) -> usize {
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            let col_bytes: usize = text
                .chars()
                .take(column.saturating_sub(1) as usize)
                .map(char::len_utf8)
                .sum();
            return offset + col_bytes;
        }
        offset += text.len();
    }
    source.len()
}

/// Turns the event stream into a [`Node`] tree, one open collection per stack frame.
#[derive(Default)]
struct Builder<'h> {
    /// Where the items of the top-level `steps` list go, when they are streamed.
    on_step: Option<&'h mut dyn FnMut(usize, Node)>,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Documents started so far: a runbook file holds exactly one.
    documents: usize,
    /// Finished anchored nodes by anchor id, with how many values each holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Values produced by aliases so far.
    expanded: usize,
}

struct Frame {
    span: Span,
    /// Items handed to `on_step` so far; `Some` only for the top-level `steps` list
    /// when steps are streamed.
    streamed: Option<usize>,
    anchor: usize,
    /// Values inside this collection, for the alias budget.
    count: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(MapFrame),
}

#[derive(Default)]
struct MapFrame {
    entries: Vec<(Key, Node)>,
    /// The key whose value comes next; `merge` when it is a plain `<<`.
    key: Option<(Key, bool)>,
    /// Key names seen, once the mapping is big enough that a linear scan would be slow.
    names: Option<HashSet<String>>,
    /// Values of `<<` merge keys, applied when the mapping ends.
    merges: Vec<Node>,
}

impl MapFrame {
    fn contains(&self, name: &str) -> bool {
        match &self.names {
            Some(names) => names.contains(name),
            None => self.entries.iter().any(|(k, _)| k.name == name),
        }
    }

    fn insert(&mut self, key: Key, value: Node) {
        if let Some(names) = &mut self.names {
            names.insert(key.name.clone());
        } else if self.entries.len() >= 16 {
            let mut names: HashSet<String> =
                self.entries.iter().map(|(k, _)| k.name.clone()).collect();
            names.insert(key.name.clone());
            self.names = Some(names);
        }
        self.entries.push((key, value));
    }
}

/// What handling one event comes to: nothing, or the error that ends the parse.
type Outcome = Result<(), (String, Span)>;

impl Builder<'_> {
    /// The document; an empty file is a null at its start.
    fn finish(self) -> Node {
        self.root.unwrap_or(Node {
            value: Value::Null,
            span: Span {
                offset: 0,
                len: 0,
                line: 1,
                column: 1,
            },
        })
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Outcome {
        match event {
            Event::DocumentStart(..) => {
                if self.documents > 0 {
                    return Err((
                        "a runbook file holds one YAML document; this starts a second one".into(),
                        span,
                    ));
                }
                self.documents += 1;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(map) = awaiting_key(&mut self.stack) {
                    let merge = style == ScalarStyle::Plain && text == "<<" && tag.is_none();
                    let key = Key {
                        name: text.into_owned(),
                        span,
                    };
                    if !merge && map.contains(&key.name) {
                        let first = map
                            .entries
                            .iter()
                            .find(|(k, _)| k.name == key.name)
                            .map_or(0, |(k, _)| k.span.line);
                        return Err((
                            format!("duplicate key `{}` (first set on line {first})", key.name),
                            span,
                        ));
                    }
                    if anchor != 0 {
                        let node = Node {
                            value: Value::Str(key.name.clone()),
                            span,
                        };
                        self.anchors.insert(anchor, (node, 1));
                    }
                    map.key = Some((key, merge));
                    return Ok(());
                }
                let value = resolve(&text, style, tag.as_deref()).map_err(|msg| (msg, span))?;
                let node = Node { value, span };
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.add(node, 1)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                self.no_collection_key(span)?;
                let top_level_steps = self.on_step.is_some()
                    && anchor == 0
                    && matches!(self.stack.as_slice(), [Frame {
                        kind: FrameKind::Map(MapFrame { key: Some((key, false)), .. }),
                        ..
                    }] if key.name == "steps");
                self.stack.push(Frame {
                    span,
                    streamed: top_level_steps.then_some(0),
                    anchor,
                    count: 0,
                    kind: FrameKind::Seq(Vec::new()),
                });
            }
            Event::MappingStart(_, anchor, _) => {
                self.no_collection_key(span)?;
                self.stack.push(Frame {
                    span,
                    streamed: None,
                    anchor,
                    count: 0,
                    kind: FrameKind::Map(MapFrame::default()),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(("unbalanced end of a collection".into(), span));
                };
                let count = frame.count + 1;
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map(map) => Value::Map(merged(map)?),
                };
                let node = Node {
                    value,
                    span: frame.span,
                };
                if frame.anchor != 0 {
                    self.anchors.insert(frame.anchor, (node.clone(), count));
                }
                self.add(node, count)?;
            }
            Event::Alias(id) => {
                let Some((node, count)) = self.anchors.get(&id) else {
                    return Err((
                        "this alias refers to the collection it is inside; recursive aliases are not supported".into(),
                        span,
                    ));
                };
                self.expanded += count;
                if self.expanded > ALIAS_EXPANSION_LIMIT {
                    return Err((
                        format!("aliases expand to more than {ALIAS_EXPANSION_LIMIT} values"),
                        span,
                    ));
                }
                let (mut node, count) = (node.clone(), *count);
                if let Some(map) = awaiting_key(&mut self.stack) {
                    let Value::Str(name) = node.value else {
                        return Err(("a mapping key must be a string".into(), span));
                    };
                    if map.contains(&name) {
                        return Err((format!("duplicate key `{name}`"), span));
                    }
                    map.key = Some((Key { name, span }, false));
                    return Ok(());
                }
                node.span = span;
                self.add(node, count)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn no_collection_key(&mut self, span: Span) -> Outcome {
        if awaiting_key(&mut self.stack).is_some() {
            return Err((
                "a mapping key must be a string, not a list or mapping".into(),
                span,
            ));
        }
        Ok(())
    }

    /// Hand a finished value to the collection it is in, or make it the document.
    fn add(&mut self, node: Node, count: usize) -> Outcome {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        frame.count += count;
        match &mut frame.kind {
            FrameKind::Seq(_) if frame.streamed.is_some() => {
                let index = frame.streamed.unwrap_or(0);
                frame.streamed = Some(index + 1);
                if let Some(on_step) = self.on_step.as_mut() {
                    on_step(index, node);
                }
            }
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map(map) => {
                let Some((key, merge)) = map.key.take() else {
                    return Err(("a mapping value without a key".into(), node.span));
                };
                if merge {
                    map.merges.push(node);
                } else {
                    map.insert(key, node);
                }
            }
        }
        Ok(())
    }
}

/// The innermost open mapping, when its next event is a key.
fn awaiting_key(stack: &mut [Frame]) -> Option<&mut MapFrame> {
    match stack.last_mut() {
        Some(Frame {
            kind: FrameKind::Map(map),
            ..
        }) if map.key.is_none() => Some(map),
        _ => None,
    }
}

/// The entries of a finished mapping with its `<<` merge keys applied: keys written in
/// the mapping win over merged ones, and earlier merge sources over later ones.
fn merged(mut map: MapFrame) -> Result<Vec<(Key, Node)>, (String, Span)> {
    for source in std::mem::take(&mut map.merges) {
        let sources = match source.value {
            Value::Seq(items) => items,
            Value::Map(_) => vec![source],
            _ => {
                return Err((
                    format!(
                        "`<<` merges a mapping or a list of mappings, not {}",
                        source.value.describe()
                    ),
                    source.span,
                ));
            }
        };
        for item in sources {
            let Value::Map(entries) = item.value else {
                return Err((
                    format!("`<<` merges mappings, not {}", item.value.describe()),
                    item.span,
                ));
            };
            for (key, value) in entries {
                if !map.contains(&key.name) {
                    map.insert(key, value);
                }
            }
        }
    }
    Ok(map.entries)
}

/// The value of a scalar, as serde-saphyr resolves a scalar into an untyped value.
fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let plain = style == ScalarStyle::Plain;
    let shown = || match text {
        "" => "an empty value".to_string(),
        _ => format!("`{text}`"),
    };
    match tag.and_then(Tag::core_suffix) {
        Some("str") => return Ok(Value::Str(text.to_owned())),
        Some("null") => return Ok(Value::Null),
        Some("bool") => {
            return yaml11_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| format!("{} is tagged !!bool but is not a boolean", shown()));
        }
        Some("int") => {
            return int(text.trim())
                .ok_or_else(|| format!("{} is tagged !!int but is not an integer", shown()));
        }
        Some("float") => {
            let t = text.trim();
            return int(t)
                .map(|v| match v {
                    Value::Int(i) => Value::Float(i as f64),
                    other => other,
                })
                .or_else(|| float(t).map(Value::Float))
                .ok_or_else(|| format!("{} is tagged !!float but is not a number", shown()));
        }
        _ => {}
    }
    if !plain {
        return Ok(Value::Str(text.to_owned()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = yaml11_bool(text) {
        return Ok(Value::Bool(b));
    }
    Ok(int(text)
        .or_else(|| float(text).map(Value::Float))
        .unwrap_or_else(|| Value::Str(text.to_owned())))
}

/// YAML 1.1 booleans, any case: y/yes/true/on and n/no/false/off.
fn yaml11_bool(text: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["y", "yes", "true", "on"];
    const FALSE: [&str; 4] = ["n", "no", "false", "off"];
    let t = text.trim();
    if t.len() > 5 {
        None
    } else if TRUE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if FALSE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// A YAML 1.2 integer: decimal without leading zeros, `0x`, `0o` or `0b`, optional sign,
/// `_` between digits. Values beyond `i64` become floats.
fn int(text: &str) -> Option<Value> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = match rest.get(..2) {
        Some("0x" | "0X") => (16, &rest[2..]),
        Some("0o" | "0O") => (8, &rest[2..]),
        Some("0b" | "0B") => (2, &rest[2..]),
        _ => (10, rest),
    };
    if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    let bytes = digits.as_bytes();
    let mut magnitude: u128 = 0;
    let mut seen = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            if i == 0 || i + 1 == bytes.len() || bytes[i - 1] == b'_' || bytes[i + 1] == b'_' {
                return None;
            }
            continue;
        }
        let digit = char::from(b).to_digit(radix)?;
        magnitude = magnitude
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(digit))?;
        seen = true;
    }
    if !seen {
        return None;
    }
    let signed = i128::try_from(magnitude).ok()?;
    let signed = if negative { -signed } else { signed };
    Some(i64::try_from(signed).map_or(Value::Float(signed as f64), Value::Int))
}

/// A finite YAML 1.2 float (`1.5`, `.5`, `1e3`, `-2.0E-3`). `.inf` and `.nan` stay text:
/// no runbook field takes them.
fn float(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let first = *unsigned.as_bytes().first()?;
    if !(first.is_ascii_digit() || first == b'.') {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_values() {
        let node = parse("a: 1\nb:\n  - x\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!("expected a map")
        };
        assert_eq!(entries[1].0.name, "b");
        assert_eq!(entries[1].0.span.line, 2);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("expected a seq")
        };
        assert_eq!(items[0].span.line, 3);
        assert_eq!(items[0].span.column, 5);
        assert_eq!(&"a: 1\nb:\n  - x\n"[items[0].span.offset..][..1], "x");
    }

    #[test]
    fn syntax_error_has_location() {
        let (msg, span) = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(!msg.starts_with("error"), "{msg}");
        assert_eq!(span.line, 3);
    }

    fn map(node: &Node) -> Vec<(&str, serde_json::Value)> {
        let Value::Map(entries) = &node.value else {
            panic!("expected a map, got {node:?}")
        };
        entries
            .iter()
            .map(|(k, v)| (k.name.as_str(), v.to_json()))
            .collect()
    }

    #[test]
    fn scalars_resolve_like_serde_saphyr() {
        let text = "a: 1\nb: -0x10\nc: 1.5\nd: yes\ne: Off\nf: ~\ng: '1'\nh: 007\ni: !!str 2\nj: 1_000\nk: .inf\nl: 99999999999999999999\nm:\n";
        let node = parse(text).unwrap();
        let got = map(&node);
        let want = serde_json::json!({
            "a": 1, "b": -16, "c": 1.5, "d": true, "e": false, "f": null, "g": "1",
            "h": 7.0, "i": "2", "j": 1000, "k": ".inf", "l": 1e20, "m": null
        });
        let got: serde_json::Map<_, _> = got.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(serde_json::Value::Object(got), want);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nlist: &l [1, 2]\nagain: *l\n";
        let node = parse(text).unwrap();
        let entries = map(&node);
        assert_eq!(entries[1], ("use", serde_json::json!({"y": 3, "x": 1})));
        assert_eq!(entries[3], ("again", serde_json::json!([1, 2])));
        // The alias is where the value is used; inside it, spans point at the anchor.
        let Value::Map(e) = &node.value else { panic!() };
        assert_eq!(e[3].1.span.line, 6);
        let Value::Map(used) = &e[1].1.value else {
            panic!()
        };
        assert_eq!(
            used[1].0.span.line, 1,
            "merged key points at its definition"
        );
    }

    #[test]
    fn structural_problems_are_errors_with_locations() {
        let cases = [
            (
                "a: 1\nb: 2\na: 3\n",
                "duplicate key `a` (first set on line 1)",
                3,
            ),
            ("a: 1\n---\nb: 2\n", "one YAML document", 2),
            ("? [x]\n: 1\n", "mapping key must be a string", 1),
            ("a: &a [*a]\n", "alias", 1),
            ("a: !!int x\n", "tagged !!int", 1),
            ("a: {<<: 3}\n", "`<<` merges", 1),
        ];
        for (text, want, line) in cases {
            let (msg, span) = parse(text).unwrap_err();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert_eq!(span.line, line, "{text:?}: {msg}");
        }
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (msg, _) = parse(&text).unwrap_err();
        assert!(msg.contains("aliases expand to more than"), "{msg}");
    }

    #[test]
    fn streamed_steps_are_the_tree_items() {
        let text = "name: x\nsteps:\n  - id: a\n  - id: b\nother: [1, 2]\n";
        let mut seen = Vec::new();
        let root = parse_streaming_steps(text, &mut |i, node| seen.push((i, node))).unwrap();
        let whole = parse(text).unwrap();
        let (Value::Map(streamed), Value::Map(full)) = (&root.value, &whole.value) else {
            panic!()
        };
        let Value::Seq(items) = &full[1].1.value else {
            panic!()
        };
        assert_eq!(seen.len(), 2);
        for ((i, node), item) in seen.iter().zip(items) {
            assert_eq!(node, item, "step {i}");
        }
        // The streamed list stays in the tree, empty, with its span; other lists are whole.
        assert_eq!(streamed[1].1.value, Value::Seq(Vec::new()));
        assert_eq!(streamed[1].1.span, full[1].1.span);
        assert_eq!(streamed[2], full[2]);
    }

    #[test]
    fn errors_after_streamed_steps_still_stop_the_parse() {
        let text = "steps:\n  - id: a\n  - id: [b\n";
        let mut count = 0;
        let err = parse_streaming_steps(text, &mut |_, _| count += 1).unwrap_err();
        assert_eq!(count, 1);
        assert!(err.1.line >= 3, "{err:?}");
    }
}
