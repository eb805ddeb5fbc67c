//! The constraint against an independent check: every token it allows can still be completed
//! into a document that `serde_json` parses and a small validator (written here, for the
//! schema subset these tests use) accepts; every document it lets end is such a document.

use super::*;
use proptest::prelude::*;

/// A small vocabulary with the awkward tokens real BPE vocabularies have: every printable
/// ASCII byte, then pieces spanning quotes and separators, escapes, numbers, whitespace,
/// keywords, multi-byte UTF-8 and a lone UTF-8 lead byte; the last two are EOG tokens.
fn vocab_words() -> Vec<Vec<u8>> {
    let mut w: Vec<Vec<u8>> = (0x20u8..0x7F).map(|b| vec![b]).collect();
    for t in [
        "\",",
        "\"}",
        "\":",
        "\": ",
        "{\"",
        "\", \"",
        ", \"",
        "}, {",
        "\"]",
        "[\"",
        "},",
        "}}",
        "]}",
        ": ",
        ", ",
        "\\\"",
        "\\n",
        "\\u00e9",
        "\\q",
        "\n",
        "  ",
        "\t",
        " \"",
        "true",
        "false",
        "null",
        "tru",
        "e,",
        "01",
        "-1",
        "1.5",
        "e+",
        "1e",
        "0.",
        "12",
        "345",
        "-",
        "name",
        "age",
        "tags",
        "ok",
        "city",
        "Berlin",
        "é",
        "日本",
        "\"name\": \"",
        "\"age\": ",
        "{\"name\": \"",
        "\n}",
        " }",
        "{}",
        "[]",
        "[1",
        "2]",
    ] {
        w.push(t.as_bytes().to_vec());
    }
    // Every other byte alone, as byte-level BPE and byte-fallback vocabularies have them (the
    // constraint needs every byte reachable: a UTF-8 lead byte must be completable).
    w.extend((0x80u8..0xFF).map(|b| vec![b]));
    w.extend(
        (0x00u8..0x20)
            .filter(|b| !b"\t\n".contains(b))
            .map(|b| vec![b]),
    );
    w.push(Vec::new()); // a control token
    w.push(Vec::new()); // EOG 1
    w.push(Vec::new()); // EOG 2
    w
}

fn vocab() -> Arc<ConstraintVocab> {
    static V: OnceLock<Arc<ConstraintVocab>> = OnceLock::new();
    V.get_or_init(|| {
        let w = vocab_words();
        let n = w.len() as u32;
        Arc::new(ConstraintVocab::from_token_bytes(w, &[n - 2, n - 1]).unwrap())
    })
    .clone()
}

fn words() -> &'static [Vec<u8>] {
    static W: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    W.get_or_init(vocab_words)
}

fn tok(s: &str) -> u32 {
    words().iter().position(|w| w == s.as_bytes()).unwrap() as u32
}

fn eog() -> u32 {
    words().len() as u32 - 1
}

/// The subset validator (type, properties, required, additionalProperties, enum, const,
/// items, min/maxItems, minimum/maximum, min/maxLength).
fn validate(schema: &Value, v: &Value) -> Result<(), String> {
    let s = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err("false schema".into()),
        Value::Object(s) => s,
        _ => return Err("bad schema".into()),
    };
    if let Some(ty) = s.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            // JSON Schema: a number with no fractional part (`-0` and `1.0` too).
            "integer" => v.as_f64().is_some_and(|x| x.fract() == 0.0),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        };
        if !ok {
            return Err(format!("{v} is not of type {ty}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{v} not in enum"));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return Err(format!("{v} is not the const"));
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64())
        && x < min
    {
        return Err(format!("{x} < {min}"));
    }
    if let (Some(max), Some(x)) = (s.get("maximum").and_then(Value::as_f64), v.as_f64())
        && x > max
    {
        return Err(format!("{x} > {max}"));
    }
    if let Some(t) = v.as_str() {
        let n = t.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || s.get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return Err(format!("{t:?}: length {n}"));
        }
    }
    if let Some(a) = v.as_array() {
        let n = a.len() as u64;
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || s.get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return Err(format!("array of {n} items"));
        }
        if let Some(items) = s.get("items") {
            a.iter().try_for_each(|x| validate(items, x))?;
        }
    }
    if let Some(o) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !o.contains_key(r.as_str().unwrap()) {
                return Err(format!("missing {r}"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(ps, x)?,
                None => match s.get("additionalProperties") {
                    None => {}
                    Some(ap) => validate(ap, x).map_err(|e| format!("extra key {k}: {e}"))?,
                },
            }
        }
    }
    Ok(())
}

fn schemas() -> Vec<OutputFormat> {
    vec![
        OutputFormat::JsonObject,
        OutputFormat::JsonSchema {
            schema: json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 12},
                    "age": {"type": "integer", "minimum": 0, "maximum": 150},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                },
                "required": ["name", "age"],
            }),
            strict: true,
        },
        OutputFormat::JsonSchema {
            schema: json!({
                "type": "object",
                "properties": {
                    "ok": {"type": "boolean"},
                    "city": {"enum": ["Berlin", "Paris", "日本"]},
                    "score": {"type": "number"},
                    "note": {"type": ["string", "null"]},
                },
                "required": ["ok", "city", "score", "note"],
                "additionalProperties": false,
            }),
            strict: false,
        },
        OutputFormat::JsonSchema {
            schema: json!({"type": "array", "items": {"type": "integer"}, "minItems": 1}),
            strict: false,
        },
        OutputFormat::JsonSchema {
            schema: json!({
                "type": "object",
                "properties": {"inner": {
                    "type": "object",
                    "properties": {"x": {"type": "number"}},
                    "required": ["x"],
                }},
                "required": ["inner"],
            }),
            strict: true,
        },
    ]
}

/// The schema the output must satisfy (what strict implies made explicit).
fn effective_schema(f: &OutputFormat) -> Value {
    let mut s = f.grammar_schema();
    s.as_object_mut().unwrap().remove("x-guidance");
    s
}

fn allowed(c: &mut Constraint) -> Vec<u32> {
    (0..words().len() as u32)
        .filter(|&t| c.allows(t).unwrap())
        .collect()
}

fn text(tokens: &[u32]) -> Vec<u8> {
    tokens
        .iter()
        .filter(|&&t| t < eog() - 2)
        .flat_map(|&t| words()[t as usize].clone())
        .collect()
}

/// The document, or `None` for valid JSON with a number beyond f64 (`1e400`: JSON's grammar
/// allows it, serde_json refuses it; Python and JavaScript read it as infinity).
fn parse(t: &[u8]) -> Result<Option<Value>, String> {
    match serde_json::from_slice(t) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.to_string().contains("number out of range") => Ok(None),
        Err(e) => Err(format!(
            "{:?} does not parse: {e}",
            String::from_utf8_lossy(t)
        )),
    }
}

/// Completes the output by always taking the most "closing" single byte the constraint
/// allows; the document it ends must parse and validate.
fn complete(c: &mut Constraint, out: &mut Vec<u32>) -> Result<Option<Value>, String> {
    const PRIORITY: &[u8] = b"\"}], 0tfn1:{[";
    for _ in 0..400 {
        if c.is_complete().unwrap() {
            return parse(&text(out));
        }
        let allow = allowed(c);
        let single = |b: u8| allow.iter().copied().find(|&t| words()[t as usize] == [b]);
        let pick = PRIORITY
            .iter()
            .find_map(|&b| single(b))
            .or_else(|| {
                allow
                    .iter()
                    .copied()
                    .find(|&t| words()[t as usize].len() == 1)
            })
            .or_else(|| allow.first().copied())
            .ok_or_else(|| {
                format!(
                    "nothing allowed after {:?}",
                    String::from_utf8_lossy(&text(out))
                )
            })?;
        c.advance(pick).unwrap();
        out.push(pick);
    }
    Err(format!(
        "no end after {:?}",
        String::from_utf8_lossy(&text(out))
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random walks through the allowed tokens: every allowed token (checked for a sample of
    /// them at every step) leaves a prefix that completes into a valid document, and wherever
    /// the walk ends the document is valid.
    #[test]
    fn every_allowed_token_keeps_a_valid_prefix(
        which in 0usize..5,
        choices in proptest::collection::vec(any::<u32>(), 1..40),
        probe in any::<u32>(),
    ) {
        let format = &schemas()[which];
        let schema = effective_schema(format);
        let mut c = Constraint::new(vocab(), format).unwrap();
        let mut out = Vec::new();
        for ch in choices {
            let allow = allowed(&mut c);
            prop_assert!(!allow.is_empty(), "stuck after {:?}", String::from_utf8_lossy(&text(&out)));
            // Probe one allowed token (besides the one the walk takes): completable.
            let p = allow[(probe as usize ^ out.len()) % allow.len()];
            if !c.vocab.is_eog(p) {
                let mut probe_c = Constraint::new(vocab(), format).unwrap();
                probe_c.advance_all(&out).unwrap();
                probe_c.advance(p).unwrap();
                let mut probe_out = out.clone();
                probe_out.push(p);
                let v = complete(&mut probe_c, &mut probe_out).map_err(TestCaseError::fail)?;
                if let Some(v) = v {
                    prop_assert!(validate(&schema, &v).is_ok(), "{v}: {:?}", validate(&schema, &v));
                }
            }
            let t = allow[ch as usize % allow.len()];
            c.advance(t).unwrap();
            if c.vocab.is_eog(t) {
                break;
            }
            out.push(t);
        }
        let v = if !c.ended {
            complete(&mut c, &mut out).map_err(TestCaseError::fail)?
        } else {
            parse(&text(&out)).map_err(TestCaseError::fail)?
        };
        if let Some(v) = v {
            prop_assert!(validate(&schema, &v).is_ok(), "{v}: {:?}", validate(&schema, &v));
        }
    }
}

fn after(format: &OutputFormat, prefix: &[&str]) -> Constraint {
    let mut c = Constraint::new(vocab(), format).unwrap();
    for p in prefix {
        c.advance(tok(p))
            .unwrap_or_else(|e| panic!("{p:?} after {prefix:?}: {e}"));
    }
    c
}

fn person() -> OutputFormat {
    schemas()[1].clone()
}

#[test]
fn an_object_must_open_the_answer_and_eog_waits_for_its_end() {
    let mut c = after(&OutputFormat::JsonObject, &[]);
    assert!(c.allows(tok("{")).unwrap());
    assert!(c.allows(tok("{\"")).unwrap());
    for t in ["[", " ", "\n", "\"", "true", "1"] {
        assert!(!c.allows(tok(t)).unwrap(), "{t:?}");
    }
    assert!(!c.allows(eog()).unwrap());
    let mut c = after(&OutputFormat::JsonObject, &["{", "}"]);
    assert!(c.allows(eog()).unwrap());
    assert!(c.allows(eog() - 1).unwrap(), "every EOG token");
    assert!(
        !c.allows(tok(" ")).unwrap(),
        "nothing after the document but its end"
    );
    assert!(!c.allows(tok("\n")).unwrap());
    c.advance(eog()).unwrap();
    assert!(c.is_complete().unwrap());
}

#[test]
fn quote_comma_tokens_only_where_a_string_ends_and_more_follows() {
    // Inside a string value of an open object: `",` needs `, ` (the separator is fixed).
    let c = &mut after(&OutputFormat::JsonObject, &["{\"", "a", "\": ", "\"", "x"]);
    assert!(c.allows(tok("\"")).unwrap());
    assert!(c.allows(tok("\"}")).unwrap());
    assert!(c.allows(tok("\", \"")).unwrap());
    assert!(c.allows(tok("\",")).unwrap(), "a prefix of `\", \"`");
    let c2 = &mut after(
        &OutputFormat::JsonObject,
        &["{\"", "a", "\": ", "\"", "x", "\","],
    );
    assert!(c2.allows(tok(" \"")).unwrap());
    assert!(!c2.allows(tok("\"")).unwrap(), "no compact separator");
    assert!(!c2.allows(tok("}")).unwrap(), "no trailing comma");
    assert!(!c.allows(tok("\"]")).unwrap(), "no array to close");
    // As a key: `":` must be followed by `: `'s space, so `": ` is allowed and `":` is not
    // (it would need the space next, which is a separate token: allowed as a prefix).
    let c = &mut after(&OutputFormat::JsonObject, &["{\"", "a"]);
    assert!(c.allows(tok("\": ")).unwrap());
    assert!(c.allows(tok("\":")).unwrap(), "a prefix of \": \"");
    assert!(!c.allows(tok("\",")).unwrap());
    assert!(!c.allows(tok("\"}")).unwrap(), "a key needs a value");
}

#[test]
fn strict_objects_take_only_declared_keys_and_need_the_required_ones() {
    // Keys come in the schema's order (llguidance's rule): `name` first.
    let c = &mut after(&person(), &["{\""]);
    assert!(c.allows(tok("name")).unwrap());
    assert!(!c.allows(tok("age")).unwrap(), "keys in the schema's order");
    assert!(
        !c.allows(tok("city")).unwrap(),
        "undeclared key under strict"
    );
    // Without strict and with additional properties allowed, any key.
    let c = &mut after(&OutputFormat::JsonObject, &["{\""]);
    assert!(c.allows(tok("city")).unwrap());
    // name given, age required: the object cannot close yet.
    let c = &mut after(&person(), &["{\"name\": \"", "ok", "\""]);
    assert!(!c.allows(tok("}")).unwrap());
    assert!(c.allows(tok(", \"")).unwrap());
    let c = &mut after(
        &person(),
        &["{\"name\": \"", "ok", "\"", ", \"", "age", "\": ", "12"],
    );
    assert!(c.allows(tok("}")).unwrap());
    assert!(!c.allows(tok(".")).unwrap(), "an integer has no fraction");
    assert!(!c.allows(tok("345")).unwrap(), "12345 > maximum 150");
    assert!(!c.allows(eog()).unwrap());
}

#[test]
fn numbers_follow_json_grammar() {
    let arr = OutputFormat::JsonSchema {
        schema: json!({"type": "array", "items": {"type": "number"}}),
        strict: false,
    };
    let c = &mut after(&arr, &["["]);
    for t in ["1", "-1", "1.5", "0.", "12", "-", "1e", "0"] {
        assert!(c.allows(tok(t)).unwrap(), "{t:?}");
    }
    assert!(!c.allows(tok("01")).unwrap(), "leading zero");
    assert!(!c.allows(tok(".")).unwrap());
    assert!(!c.allows(tok("+")).unwrap());
    let c = &mut after(&arr, &["[", "1e"]);
    assert!(c.allows(tok("+")).unwrap());
    assert!(c.allows(tok("5")).unwrap());
    assert!(!c.allows(tok("]")).unwrap(), "an exponent needs digits");
    let c = &mut after(&arr, &["[", "0."]);
    assert!(!c.allows(tok("]")).unwrap(), "a fraction needs digits");
    assert!(c.allows(tok("5")).unwrap());
}

#[test]
fn strings_take_escapes_and_utf8_but_not_raw_control_characters() {
    let c = &mut after(&OutputFormat::JsonObject, &["{\"", "a", "\": ", "\""]);
    assert!(c.allows(tok("\\\"")).unwrap());
    assert!(c.allows(tok("\\n")).unwrap());
    assert!(c.allows(tok("é")).unwrap());
    assert!(c.allows(tok("日本")).unwrap());
    assert!(!c.allows(tok("\\q")).unwrap(), "not a JSON escape");
    assert!(!c.allows(tok("\n")).unwrap(), "raw newline inside a string");
    assert!(!c.allows(tok("\t")).unwrap(), "raw tab inside a string");
    // A lone UTF-8 lead byte is allowed only as part of a character still to complete.
    let lead = words().iter().position(|w| w == &[0xC3]).unwrap() as u32;
    let cont = words().iter().position(|w| w == &[0xA9]).unwrap() as u32;
    assert!(c.allows(lead).unwrap());
    assert!(
        !c.allows(cont).unwrap(),
        "a continuation byte cannot start a character"
    );
    let mut c2 = after(&OutputFormat::JsonObject, &["{\"", "a", "\": ", "\""]);
    c2.advance(lead).unwrap();
    assert!(
        !c2.allows(tok("\"")).unwrap(),
        "an incomplete character cannot end the string"
    );
    assert!(c2.allows(cont).unwrap());
    c2.advance(cont).unwrap();
    assert!(c2.allows(tok("\"")).unwrap());
}

#[test]
fn whitespace_is_only_the_fixed_separators() {
    let c = &mut after(&OutputFormat::JsonObject, &["{\"", "a", "\": ", "1"]);
    assert!(!c.allows(tok(" }")).unwrap());
    assert!(!c.allows(tok("\n}")).unwrap());
    assert!(!c.allows(tok("  ")).unwrap());
    assert!(c.allows(tok("}")).unwrap());
    assert!(c.allows(tok(", \"")).unwrap());
}

#[test]
fn enums_and_nullable_types() {
    let f = schemas()[2].clone();
    let c = &mut after(
        &f,
        &["{\"", "ok", "\": ", "true", ", \"", "city", "\": ", "\""],
    );
    assert!(c.allows(tok("Berlin")).unwrap());
    assert!(c.allows(tok("日本")).unwrap());
    assert!(!c.allows(tok("name")).unwrap());
    let c = &mut after(
        &f,
        &[
            "{\"", "ok", "\": ", "true", ", \"", "city", "\": ", "\"", "Berlin", "\"", ", \"", "s",
            "c", "o", "r", "e", "\": ", "1", ", \"", "n", "o", "t", "e", "\": ",
        ],
    );
    assert!(c.allows(tok("null")).unwrap());
    assert!(c.allows(tok("\"")).unwrap());
    assert!(!c.allows(tok("true")).unwrap());
}

#[test]
fn masks_are_a_function_of_the_tokens_and_logits_masking_matches_allows() {
    let f = person();
    let prefix = ["{\"name\": \"", "ok", "\"", ", \""];
    let mut a = after(&f, &prefix);
    let mut b = after(&f, &prefix);
    assert_eq!(allowed(&mut a), allowed(&mut b));
    let mut logits = vec![1.0f32; words().len() + 3];
    a.mask_logits(&mut logits).unwrap();
    for (t, &l) in logits.iter().enumerate() {
        let ok = t < words().len() && a.allows(t as u32).unwrap();
        assert_eq!(l.is_finite(), ok, "token {t}");
    }
    // Resuming: a fresh constraint fed the same tokens gives the same state.
    let ids: Vec<u32> = prefix.iter().map(|p| tok(p)).collect();
    let mut c = Constraint::new(vocab(), &f).unwrap();
    c.advance_all(&ids).unwrap();
    assert_eq!(allowed(&mut c), allowed(&mut a));
    assert!(
        c.advance(tok("city")).is_err(),
        "a disallowed token is refused"
    );
}

#[test]
fn response_format_parsing_and_errors() {
    assert_eq!(parse_response_format(&json!({"type": "text"})), Ok(None));
    assert_eq!(
        parse_response_format(&json!({"type": "json_object"})),
        Ok(Some(OutputFormat::JsonObject))
    );
    let ok = json!({"type": "json_schema", "json_schema": {
        "name": "person", "strict": true,
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}});
    assert!(matches!(
        parse_response_format(&ok),
        Ok(Some(OutputFormat::JsonSchema { strict: true, .. }))
    ));
    for (bad, needle) in [
        (json!("json_object"), "must be an object"),
        (json!({"type": "xml"}), "not supported"),
        (
            json!({"type": "json_object", "schema": {}}),
            "unknown field response_format.schema",
        ),
        (
            json!({"type": "json_schema"}),
            "json_schema must be an object",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": {}}}),
            "name",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
            "name",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}),
            "JSON object",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}}),
            "boolean",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "banana"}}}),
            "invalid JSON schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "a",
                "schema": {"type": "integer", "minimum": 5, "maximum": 1}}}),
            "invalid JSON schema",
        ),
    ] {
        let e = parse_response_format(&bad).expect_err(&bad.to_string());
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

#[test]
fn strict_closes_every_object_schema_but_not_property_maps() {
    let f = OutputFormat::JsonSchema {
        schema: json!({
            "type": "object",
            "properties": {
                "properties": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "open": {"type": "object", "additionalProperties": true},
                "e": {"enum": [{"type": "object"}]},
            },
            "$defs": {"d": {"type": "object"}},
        }),
        strict: true,
    };
    let s = effective_schema(&f);
    assert_eq!(s["additionalProperties"], json!(false));
    assert_eq!(
        s["properties"]["properties"]["additionalProperties"],
        json!(false)
    );
    assert!(
        s["properties"].get("additionalProperties").is_none(),
        "the map is not a schema"
    );
    assert_eq!(s["properties"]["open"]["additionalProperties"], json!(true));
    assert_eq!(
        s["properties"]["e"]["enum"],
        json!([{"type": "object"}]),
        "data untouched"
    );
    assert_eq!(s["$defs"]["d"]["additionalProperties"], json!(false));
}

#[test]
fn wire_round_trip() {
    for f in schemas() {
        assert_eq!(OutputFormat::from_wire(&f.to_wire()).unwrap(), f);
    }
}
