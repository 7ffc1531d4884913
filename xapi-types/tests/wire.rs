//! The XML-RPC and JSON-RPC codecs through their public API: exact bytes of what we write (snapshots),
//! round trips, real client requests, malformed input, and a mutation loop that must never panic.

use expect_test::{Expect, expect};
use xapi_types::Value;
use xapi_types::wire::jsonrpc::{self, Envelope, JsonSink, Version};
use xapi_types::wire::xmlrpc::{self, XmlSink};
use xapi_types::wire::{Call, MAX_DEPTH, Sink, WireError};

fn s(v: &str) -> Value {
    Value::str(v)
}

fn st(members: &[(&str, Value)]) -> Value {
    Value::Struct(members.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

/// A struct holding every kind of value, including text that needs escaping or dropping.
fn every_kind() -> Value {
    st(&[
        ("str", s("OpaqueRef:7c0b <a & b> \"q\" 'a' é\u{1}\t")),
        ("empty", s("")),
        ("int", Value::Int(-4294967296)),
        ("i32", Value::I32(42)),
        ("float", Value::Float(0.1)),
        ("big_float", Value::Float(1e20)),
        ("whole_float", Value::Float(3.0)),
        ("nan", Value::Float(f64::NAN)),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("date", Value::DateTime("20250319T04:16:24Z".into())),
        ("nil", Value::Nil),
        ("set", Value::Array(vec![s("a"), Value::Int(1)])),
        ("empty_set", Value::Array(vec![])),
        ("map", st(&[("k<", s("v"))])),
        ("empty_map", st(&[])),
    ])
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("codecs write UTF-8")
}

fn check(bytes: Vec<u8>, want: Expect) {
    want.assert_eq(&text(bytes));
}

fn env(version: Version, id: serde_json::Value) -> Envelope {
    Envelope { version, id }
}

// ---------------------------------------------------------------------------------------------------------------
// Exact bytes.

#[test]
fn xml_success_every_kind() {
    check(
        xmlrpc::success(&every_kind()),
        expect![[
            r#"<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value><struct><member><name>str</name><value>OpaqueRef:7c0b &lt;a &amp; b&gt; &quot;q&quot; 'a' é	</value></member><member><name>empty</name><value></value></member><member><name>int</name><value>-4294967296</value></member><member><name>i32</name><value><i4>42</i4></value></member><member><name>float</name><value><double>0.1</double></value></member><member><name>big_float</name><value><double>1e+20</double></value></member><member><name>whole_float</name><value><double>3</double></value></member><member><name>nan</name><value><double>NaN</double></value></member><member><name>true</name><value><boolean>1</boolean></value></member><member><name>false</name><value><boolean>0</boolean></value></member><member><name>date</name><value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value></member><member><name>nil</name><value><nil/></value></member><member><name>set</name><value><array><data><value>a</value><value>1</value></data></array></value></member><member><name>empty_set</name><value><array><data></data></array></value></member><member><name>map</name><value><struct><member><name>k&lt;</name><value>v</value></member></struct></value></member><member><name>empty_map</name><value><struct></struct></value></member></struct></value></member></struct></value></param></params></methodResponse>"#
        ]],
    );
}

#[test]
fn xml_failure() {
    check(
        xmlrpc::failure(&["UUID_INVALID".into(), "VM".into(), "0000-<x>".into()]),
        expect![[
            r#"<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>UUID_INVALID</value><value>VM</value><value>0000-&lt;x&gt;</value></data></array></value></member></struct></value></param></params></methodResponse>"#
        ]],
    );
}

#[test]
fn xml_bare_array() {
    check(
        xmlrpc::bare(&Value::Array(vec![s("VM.get_all_records"), s("system.listMethods")])),
        expect![[
            r#"<?xml version="1.0"?><methodResponse><params><param><value><array><data><value>VM.get_all_records</value><value>system.listMethods</value></data></array></value></param></params></methodResponse>"#
        ]],
    );
}

#[test]
fn xml_call() {
    check(
        xmlrpc::write_call("VM.get_record", &[s("OpaqueRef:a"), Value::Int(5), Value::Array(vec![])]),
        expect![[
            r#"<?xml version="1.0"?><methodCall><methodName>VM.get_record</methodName><params><param><value>OpaqueRef:a</value></param><param><value>5</value></param><param><value><array><data></data></array></value></param></params></methodCall>"#
        ]],
    );
}

#[test]
fn json_v1_success_every_kind() {
    check(
        jsonrpc::success(&env(Version::V1, serde_json::json!(7)), &every_kind()),
        expect![[
            r#"{"result":{"str":"OpaqueRef:7c0b <a & b> \"q\" 'a' é\u0001\t","empty":"","int":-4294967296,"i32":42,"float":0.1,"big_float":1e+20,"whole_float":3.0,"nan":null,"true":true,"false":false,"date":"20250319T04:16:24Z","nil":null,"set":["a",1],"empty_set":[],"map":{"k<":"v"},"empty_map":{}},"error":null,"id":7}"#
        ]],
    );
}

#[test]
fn json_v2_success() {
    check(
        jsonrpc::success(&env(Version::V2, serde_json::json!("5c1e-uuid")), &every_kind()),
        expect![[
            r#"{"jsonrpc":"2.0","result":{"str":"OpaqueRef:7c0b <a & b> \"q\" 'a' é\u0001\t","empty":"","int":-4294967296,"i32":42,"float":0.1,"big_float":1e+20,"whole_float":3.0,"nan":null,"true":true,"false":false,"date":"20250319T04:16:24Z","nil":null,"set":["a",1],"empty_set":[],"map":{"k<":"v"},"empty_map":{}},"id":"5c1e-uuid"}"#
        ]],
    );
}

#[test]
fn json_failures() {
    let desc = ["SESSION_INVALID".to_string(), "OpaqueRef:1".to_string()];
    check(
        jsonrpc::failure(&env(Version::V1, serde_json::json!(0)), &desc),
        expect![[r#"{"result":null,"error":["SESSION_INVALID","OpaqueRef:1"],"id":0}"#]],
    );
    check(
        jsonrpc::failure(&env(Version::V2, serde_json::json!(0)), &desc),
        expect![[r#"{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:1"]},"id":0}"#]],
    );
    check(
        jsonrpc::failure(&env(Version::V2, serde_json::json!("x")), &["EVENTS_LOST".to_string()]),
        expect![[r#"{"jsonrpc":"2.0","error":{"code":1,"message":"EVENTS_LOST","data":[]},"id":"x"}"#]],
    );
}

#[test]
fn json_calls() {
    let params = [s("root"), Value::Int(1), st(&[("a", Value::Nil)])];
    check(
        jsonrpc::write_call("session.login_with_password", &params, Version::V2, serde_json::json!(0)),
        expect![[r#"{"jsonrpc":"2.0","method":"session.login_with_password","params":["root",1,{"a":null}],"id":0}"#]],
    );
    check(
        jsonrpc::write_call("pool.get_all", &[], Version::V1, serde_json::json!("id-1")),
        expect![[r#"{"method":"pool.get_all","params":[],"id":"id-1"}"#]],
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming: the begin/end halves around a sink give the same bytes, even when `out` is drained between records.

fn records(n: usize) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| {
            (
                format!("OpaqueRef:{i}"),
                st(&[("name_label", s(&format!("vm {i}"))), ("tags", Value::Array(vec![s("t")]))]),
            )
        })
        .collect()
}

fn stream<S: Sink>(sink: &mut S, out: fn(&mut S) -> &mut Vec<u8>, recs: &[(String, Value)], drained: &mut Vec<u8>) {
    sink.begin_struct();
    for (k, v) in recs {
        sink.key(k);
        v.emit(sink);
        drained.append(out(sink));
    }
    sink.end_struct();
    drained.append(out(sink));
}

#[test]
fn streaming_equals_whole() {
    let recs = records(50);
    let whole = Value::Struct(recs.clone());

    let mut sink = XmlSink::new();
    xmlrpc::begin_success(&mut sink.out);
    let mut drained = Vec::new();
    stream(&mut sink, |s| &mut s.out, &recs, &mut drained);
    xmlrpc::end_success(&mut drained);
    assert_eq!(text(drained), text(xmlrpc::success(&whole)));

    for e in [env(Version::V1, serde_json::json!(1)), env(Version::V2, serde_json::json!("a"))] {
        let mut sink = JsonSink::new();
        jsonrpc::begin_success(&mut sink.out, &e);
        let mut drained = Vec::new();
        stream(&mut sink, |s| &mut s.out, &recs, &mut drained);
        jsonrpc::end_success(&mut drained, &e);
        assert_eq!(text(drained), text(jsonrpc::success(&e, &whole)));
    }

    // A sink that starts on a buffer holding the prefix.
    let mut prefix = Vec::new();
    xmlrpc::begin_success(&mut prefix);
    let mut sink = XmlSink::with_buffer(prefix);
    whole.emit(&mut sink);
    xmlrpc::end_success(&mut sink.out);
    assert_eq!(text(sink.out), text(xmlrpc::success(&whole)));
}

// ---------------------------------------------------------------------------------------------------------------
// Round trips.

/// Nested values that survive both codecs unchanged (no I32, which reads back as Int, and no NaN).
fn nested() -> Value {
    let mut v = st(&[
        ("s", s("  spaced \n text & <tags> \"'")),
        ("empty", s("")),
        ("i", Value::Int(i64::MIN)),
        ("j", Value::Int(i64::MAX)),
        ("f", Value::Float(-1.5e-300)),
        ("g", Value::Float(0.1)),
        ("b", Value::Bool(false)),
        ("n", Value::Nil),
        ("unicode", s("é ☃ 😀")),
        ("dup", s("1")),
        ("dup", s("2")),
    ]);
    for i in 0..10 {
        v = st(&[("level", Value::Int(i)), ("inner", Value::Array(vec![v.clone(), Value::Array(vec![])]))]);
    }
    v
}

/// What a value reads back as from XML-RPC: int64 travels as a bare string (as xapi writes it) and `<i4>`
/// reads as Int.
fn as_xml_reads_it(v: &Value) -> Value {
    match v {
        Value::Int(i) => Value::Str(i.to_string()),
        Value::I32(i) => Value::Int(i64::from(*i)),
        Value::Array(items) => Value::Array(items.iter().map(as_xml_reads_it).collect()),
        Value::Struct(m) => Value::Struct(m.iter().map(|(k, v)| (k.clone(), as_xml_reads_it(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn xml_round_trips() {
    let mut params = vec![s("OpaqueRef:x"), nested(), Value::DateTime("20240101T00:00:00Z".into())];
    let call = xmlrpc::parse_call(&xmlrpc::write_call("VM.set_other_config", &params)).unwrap();
    let want: Vec<Value> = params.iter().map(as_xml_reads_it).collect();
    assert_eq!(call, Call { method: "VM.set_other_config".into(), params: want });

    let v = nested();
    let response = xmlrpc::parse_response(&xmlrpc::success(&v)).unwrap();
    assert_eq!(response, st(&[("Status", s("Success")), ("Value", as_xml_reads_it(&v))]));
    assert_eq!(xmlrpc::parse_result(&xmlrpc::success(&v)).unwrap(), Ok(as_xml_reads_it(&v)));
    let desc = vec!["HANDLE_INVALID".to_string(), "VM".into(), "OpaqueRef:&".into()];
    assert_eq!(xmlrpc::parse_result(&xmlrpc::failure(&desc)).unwrap(), Err(desc));
    let list = Value::Array(vec![s("a.b"), s("c.d")]);
    assert_eq!(xmlrpc::parse_result(&xmlrpc::bare(&list)).unwrap(), Ok(list));

    // I32 comes back as Int; infinities and NaN come back as such; %.16g keeps 16 digits, as xapi's does.
    params = vec![
        Value::I32(-7),
        Value::Float(f64::INFINITY),
        Value::Float(f64::NEG_INFINITY),
        Value::Float(0.30000000000000004),
    ];
    let call = xmlrpc::parse_call(&xmlrpc::write_call("m", &params)).unwrap();
    assert_eq!(
        call.params,
        vec![Value::Int(-7), Value::Float(f64::INFINITY), Value::Float(f64::NEG_INFINITY), Value::Float(0.3)]
    );
    let call = xmlrpc::parse_call(&xmlrpc::write_call("m", &[Value::Float(f64::NAN)])).unwrap();
    assert!(matches!(call.params[..], [Value::Float(f)] if f.is_nan()));
}

#[test]
fn xml_round_trip_at_max_depth() {
    let mut v = s("1");
    for _ in 0..MAX_DEPTH {
        v = Value::Array(vec![v]);
    }
    let call = xmlrpc::parse_call(&xmlrpc::write_call("m", std::slice::from_ref(&v))).unwrap();
    assert_eq!(call.params, vec![v.clone()]);
    // The Status struct around a result gets one level of allowance.
    assert_eq!(xmlrpc::parse_result(&xmlrpc::success(&v)).unwrap(), Ok(v.clone()));
    let deeper = Value::Array(vec![v]);
    assert_eq!(xmlrpc::parse_call(&xmlrpc::write_call("m", &[deeper])), Err(WireError::TooDeep(MAX_DEPTH)));
}

#[test]
fn json_round_trips() {
    let params = vec![s("OpaqueRef:x"), nested(), Value::Float(1.0), Value::Float(1e300)];
    for (version, id) in [(Version::V1, serde_json::json!(3)), (Version::V2, serde_json::json!("abc"))] {
        let (e, call) = jsonrpc::parse_call(&jsonrpc::write_call("VM.x", &params, version, id.clone())).unwrap();
        assert_eq!(e, env(version, id));
        assert_eq!(call, Call { method: "VM.x".into(), params: params.clone() });

        let v = nested();
        assert_eq!(jsonrpc::parse_response(&jsonrpc::success(&e, &v)).unwrap(), Ok(v));
        let desc = vec!["SESSION_INVALID".to_string(), "OpaqueRef:1".into()];
        assert_eq!(jsonrpc::parse_response(&jsonrpc::failure(&e, &desc)).unwrap(), Err(desc));
    }
    // Datetimes travel as strings and I32 as a number.
    let e = env(Version::V2, serde_json::json!(0));
    let back =
        jsonrpc::parse_response(&jsonrpc::success(&e, &Value::Array(vec![Value::DateTime("d".into()), Value::I32(3)])));
    assert_eq!(back.unwrap(), Ok(Value::Array(vec![s("d"), Value::Int(3)])));
}

// ---------------------------------------------------------------------------------------------------------------
// Real client requests.

/// `xmlrpc.client.dumps(('OpaqueRef:0b9c', {'a': [1, True, 1.5, None, 'x<&>']}, 5), 'VM.get_record',
/// allow_none=True)` from Python 3.
const PYTHON_REQUEST: &str = "<?xml version='1.0'?>\n<methodCall>\n<methodName>VM.get_record</methodName>\n<params>\n<param>\n<value><string>OpaqueRef:0b9c</string></value>\n</param>\n<param>\n<value><struct>\n<member>\n<name>a</name>\n<value><array><data>\n<value><int>1</int></value>\n<value><boolean>1</boolean></value>\n<value><double>1.5</double></value>\n<value><nil/></value><value><string>x&lt;&amp;&gt;</string></value>\n</data></array></value>\n</member>\n</struct></value>\n</param>\n<param>\n<value><int>5</int></value>\n</param>\n</params>\n</methodCall>\n";

#[test]
fn python_request() {
    let call = xmlrpc::parse_call(PYTHON_REQUEST.as_bytes()).unwrap();
    let want = Call {
        method: "VM.get_record".into(),
        params: vec![
            s("OpaqueRef:0b9c"),
            st(&[(
                "a",
                Value::Array(vec![Value::Int(1), Value::Bool(true), Value::Float(1.5), Value::Nil, s("x<&>")]),
            )]),
            Value::Int(5),
        ],
    };
    assert_eq!(call, want);

    // Python's zero-argument call and its other spellings.
    let call = xmlrpc::parse_call(b"<?xml version='1.0'?>\n<methodCall>\n<methodName>system.listMethods</methodName>\n<params>\n</params>\n</methodCall>\n").unwrap();
    assert_eq!(call, Call { method: "system.listMethods".into(), params: vec![] });
    let call = xmlrpc::parse_call(
        b"<methodCall><methodName>m</methodName><params><param><value><i8>-9000000000</i8></value></param><param><value><i4> 7 </i4></value></param><param><value><dateTime.iso8601>20240101T00:00:00</dateTime.iso8601></value></param><param><value><boolean>false</boolean></value></param><param><value><double>inf</double></value></param></params></methodCall>",
    )
    .unwrap();
    assert_eq!(
        call.params,
        vec![
            Value::Int(-9000000000),
            Value::Int(7),
            Value::DateTime("20240101T00:00:00".into()),
            Value::Bool(false),
            Value::Float(f64::INFINITY)
        ]
    );
}

/// What Xen Orchestra's `xen-api` 4.7.6 sends (`@vates/xml-rpc` + `formatXml(…, {indent: 0})`, after
/// `prepareXmlRpcParams`) for `event.from(session, ['VM','host'], '', 60.1)` with a few extra params.
const XO_REQUEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?><methodCall><methodName>event.from</methodName><params><param><value>OpaqueRef:5e1a</value></param><param><value><array><data><value>VM</value><value>host</value></data></array></value></param><param><value></value></param><param><value><double>60.1</double></value></param><param><value><struct><member><name>other</name><value><struct><member><name>xo:a</name><value>b &lt;c&gt;</value></member></struct></value></member><member><name>n</name><value>42</value></member><member><name>ok</name><value><boolean>1</boolean></value></member><member><name>nothing</name><value><nil /></value></member><member><name>when</name><value><struct /></value></member></struct></value></param><param><value>2024-01-01T00:00:00.000Z</value></param></params></methodCall>"#;

#[test]
fn xo_request() {
    let call = xmlrpc::parse_call(XO_REQUEST.as_bytes()).unwrap();
    let want = Call {
        method: "event.from".into(),
        params: vec![
            s("OpaqueRef:5e1a"),
            Value::Array(vec![s("VM"), s("host")]),
            s(""),
            Value::Float(60.1),
            st(&[
                ("other", st(&[("xo:a", s("b <c>"))])),
                ("n", s("42")),
                ("ok", Value::Bool(true)),
                ("nothing", Value::Nil),
                ("when", st(&[])),
            ]),
            s("2024-01-01T00:00:00.000Z"),
        ],
    };
    assert_eq!(call, want);

    // XO's JSON-RPC request.
    let (e, call) = jsonrpc::parse_call(
        br#"{"id":0,"jsonrpc":"2.0","method":"session.login_with_password","params":["root","pa\"ss\u00e9\ud83d\ude00"]}"#,
    )
    .unwrap();
    assert_eq!(e, env(Version::V2, serde_json::json!(0)));
    assert_eq!(call.params, vec![s("root"), s("pa\"ssé😀")]);
}

#[test]
fn xml_text_rules() {
    let one = |value: &str| -> Result<Value, WireError> {
        let body =
            format!("<methodCall><methodName>m</methodName><params><param>{value}</param></params></methodCall>");
        xmlrpc::parse_call(body.as_bytes()).map(|c| c.params.into_iter().next().unwrap())
    };
    assert_eq!(one("<value>  a </value>"), Ok(s("  a ")));
    assert_eq!(one("<value>   </value>"), Ok(s("   ")));
    assert_eq!(one("<value></value>"), Ok(s("")));
    assert_eq!(one("<value/>"), Ok(s("")));
    assert_eq!(one("<value><string/></value>"), Ok(s("")));
    assert_eq!(one("<value><string> x </string></value>"), Ok(s(" x ")));
    assert_eq!(one("<value>\n  <string>x</string>\n</value>"), Ok(s("x")));
    assert_eq!(one("<value>a&#10;&#x263A;&apos;&quot;b</value>"), Ok(s("a\n☺'\"b")));
    assert_eq!(one("<value>a\r\nb\rc&#13;</value>"), Ok(s("a\nb\nc\r")));
    assert_eq!(one("<value>a<!-- c -->b<![CDATA[<&>]]></value>"), Ok(s("ab<&>")));
    assert_eq!(one("<value><array/></value>"), Ok(Value::Array(vec![])));
    assert_eq!(one("<value><array></array></value>"), Ok(Value::Array(vec![])));
    assert_eq!(one("<value><struct>\n</struct></value>"), Ok(st(&[])));
    assert_eq!(one("<value ><int >-0</int ></value >"), Ok(Value::Int(0)));
    assert!(matches!(one("<value>a<int>1</int></value>"), Err(WireError::Malformed(_))));
    assert!(matches!(one("<value><int>1</int>x</value>"), Err(WireError::Malformed(_))));
}

// ---------------------------------------------------------------------------------------------------------------
// Malformed input.

fn deep_xml(n: usize) -> String {
    format!(
        "<methodCall><methodName>m</methodName><params><param><value>{}1{}</value></param></params></methodCall>",
        "<array><data><value>".repeat(n),
        "</value></data></array>".repeat(n)
    )
}

#[test]
fn xml_malformed() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<methodCall><methodName>&lol3;</methodName><params/></methodCall>"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("truncated", PYTHON_REQUEST.as_bytes()[..PYTHON_REQUEST.len() / 2].to_vec()),
        ("billion laughs", bomb.as_bytes().to_vec()),
        ("bad int", b"<methodCall><methodName>m</methodName><params><param><value><int>abc</int></value></param></params></methodCall>".to_vec()),
        ("int overflow", b"<methodCall><methodName>m</methodName><params><param><value><int>9223372036854775808</int></value></param></params></methodCall>".to_vec()),
        ("bad double", b"<methodCall><methodName>m</methodName><params><param><value><double>1.2.3</double></value></param></params></methodCall>".to_vec()),
        ("bad boolean", b"<methodCall><methodName>m</methodName><params><param><value><boolean>2</boolean></value></param></params></methodCall>".to_vec()),
        ("unknown type", b"<methodCall><methodName>m</methodName><params><param><value><long>1</long></value></param></params></methodCall>".to_vec()),
        ("base64", b"<methodCall><methodName>m</methodName><params><param><value><base64>aGk=</base64></value></param></params></methodCall>".to_vec()),
        ("no methodName", b"<methodCall><params></params></methodCall>".to_vec()),
        ("mismatched end", b"<methodCall><methodName>m</methodNam></methodCall>".to_vec()),
        ("trailing garbage", b"<methodCall><methodName>m</methodName></methodCall>junk".to_vec()),
        ("second root", b"<methodCall><methodName>m</methodName></methodCall><methodCall/>".to_vec()),
        ("invalid utf-8", b"<methodCall><methodName>m\xff</methodName></methodCall>".to_vec()),
        ("unknown entity", b"<methodCall><methodName>&nbsp;</methodName></methodCall>".to_vec()),
        ("bare ampersand", b"<methodCall><methodName>a & b</methodName></methodCall>".to_vec()),
        ("nul reference", b"<methodCall><methodName>&#0;</methodName></methodCall>".to_vec()),
        ("surrogate reference", b"<methodCall><methodName>&#xD800;</methodName></methodCall>".to_vec()),
        ("unterminated comment", b"<methodCall><!-- <methodName>m</methodName></methodCall>".to_vec()),
        ("member without name", b"<methodCall><methodName>m</methodName><params><param><value><struct><member><value>1</value></member></struct></value></param></params></methodCall>".to_vec()),
        ("two values in a param", b"<methodCall><methodName>m</methodName><params><param><value>1</value><value>2</value></param></params></methodCall>".to_vec()),
        ("text in params", b"<methodCall><methodName>m</methodName><params>x</params></methodCall>".to_vec()),
        ("wrong root", b"<methodResponse><params/></methodResponse>".to_vec()),
        ("unquoted attribute", b"<methodCall a=b><methodName>m</methodName></methodCall>".to_vec()),
    ];
    for (what, body) in cases {
        match xmlrpc::parse_call(&body) {
            Err(WireError::Malformed(m)) => assert!(!m.is_empty(), "{what}"),
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
    }
    assert_eq!(xmlrpc::parse_call(deep_xml(10_000).as_bytes()), Err(WireError::TooDeep(MAX_DEPTH)));
    assert_eq!(xmlrpc::parse_call(deep_xml(MAX_DEPTH + 1).as_bytes()), Err(WireError::TooDeep(MAX_DEPTH)));
    assert!(xmlrpc::parse_call(deep_xml(MAX_DEPTH).as_bytes()).is_ok());
    let deep_struct = format!(
        "<methodCall><methodName>m</methodName><params><param><value>{}1{}</value></param></params></methodCall>",
        "<struct><member><name>k</name><value>".repeat(10_000),
        "</value></member></struct>".repeat(10_000)
    );
    assert_eq!(xmlrpc::parse_call(deep_struct.as_bytes()), Err(WireError::TooDeep(MAX_DEPTH)));

    // Client side: a fault, and an unclosed response.
    let fault = b"<?xml version=\"1.0\"?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value>boom</value></member></struct></value></fault></methodResponse>";
    check_err(xmlrpc::parse_response(fault), expect![[r#"Err(Malformed("XML-RPC fault 1: boom"))"#]]);
    check_err(
        xmlrpc::parse_response(b"<methodResponse><params><param><value>x</value></param>"),
        expect![[r#"Err(Malformed("expected </params>, found the end of the body"))"#]],
    );
}

fn check_err<T: std::fmt::Debug>(r: Result<T, WireError>, want: Expect) {
    want.assert_eq(&format!("{r:?}"));
}

#[test]
fn error_messages_are_short_and_clear() {
    let p = |b: &[u8]| xmlrpc::parse_call(b).map(|_| ());
    check_err(
        p(b"<methodCall><methodName>m</methodName><params><param><value><int>abc</int></value></param></params></methodCall>"),
        expect![[r#"Err(Malformed("bad <int> \"abc\""))"#]],
    );
    check_err(
        p(b"<!DOCTYPE x [<!ENTITY a \"b\">]><methodCall/>"),
        expect![[r#"Err(Malformed("DOCTYPE (and so entity declarations) not allowed"))"#]],
    );
    check_err(
        p(b"<methodCall><params/></methodCall>"),
        expect![[r#"Err(Malformed("expected <methodName>, found <params>"))"#]],
    );
    let j = |b: &[u8]| jsonrpc::parse_call(b).map(|_| ());
    check_err(
        j(br#"{"method":"m","params":[],"id":1.5}"#),
        expect![[r#"Err(Malformed("field 'id' is neither a string nor an integer"))"#]],
    );
    check_err(
        j(br#"{"method":"m","params":[1,]}"#),
        expect![[r#"Err(Malformed("expected a value at byte 26, found ']'"))"#]],
    );
}

#[test]
fn json_requests() {
    let ok = |b: &str| jsonrpc::parse_call(b.as_bytes()).unwrap();
    let (e, c) = ok(r#" {"method":"VM.get_all","params":["s"],"id":"x"} "#);
    assert_eq!((e.version, e.id, c.params), (Version::V1, serde_json::json!("x"), vec![s("s")]));
    let (e, c) = ok(r#"{"jsonrpc":"2.0","method":"m","id":-3}"#);
    assert_eq!((e.version, e.id, c.params), (Version::V2, serde_json::json!(-3), vec![]));
    let (_, c) = ok(r#"{"jsonrpc":"2.0","method":"m","params":null,"id":1}"#);
    assert_eq!(c.params, vec![]);
    let (_, c) = ok(r#"{"jsonrpc":"2.0","method":"m","params":{"b":1,"a":[true,null]},"id":1}"#);
    assert_eq!(c.params, vec![st(&[("b", Value::Int(1)), ("a", Value::Array(vec![Value::Bool(true), Value::Nil]))])]);
    let (_, c) = ok(
        r#"{"method":"m","params":[1,-0,1.0,1e3,-2.5E-3,9223372036854775807,-9223372036854775808,"\/\b\f\n\r\t"],"id":1}"#,
    );
    assert_eq!(
        c.params,
        vec![
            Value::Int(1),
            Value::Int(0),
            Value::Float(1.0),
            Value::Float(1000.0),
            Value::Float(-0.0025),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
            s("/\u{8}\u{c}\n\r\t"),
        ]
    );
    // Duplicated members: the envelope takes the first; a struct keeps them all, in order.
    let (_, c) = ok(r#"{"method":"first","method":"second","params":[{"k":1,"k":2}],"id":1}"#);
    assert_eq!(c.method, "first");
    assert_eq!(c.params, vec![st(&[("k", Value::Int(1)), ("k", Value::Int(2))])]);
}

fn deep_json(open: &str, close: &str, n: usize) -> String {
    format!(r#"{{"method":"m","params":[{}1{}],"id":1}}"#, open.repeat(n), close.repeat(n))
}

#[test]
fn json_malformed() {
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("not an object", b"[1]"),
        ("truncated", br#"{"method":"m","params":["a"#),
        ("bad id (float)", br#"{"method":"m","params":[],"id":1.5}"#),
        ("bad id (array)", br#"{"method":"m","params":[],"id":[1]}"#),
        ("bad id (bool)", br#"{"method":"m","params":[],"id":true}"#),
        ("no id", br#"{"method":"m","params":[]}"#),
        ("null id", br#"{"method":"m","params":[],"id":null}"#),
        ("v1 params object", br#"{"method":"m","params":{"a":1},"id":1}"#),
        ("v1 params missing", br#"{"method":"m","id":1}"#),
        ("v1 params null", br#"{"method":"m","params":null,"id":1}"#),
        ("v2 params string", br#"{"jsonrpc":"2.0","method":"m","params":"x","id":1}"#),
        ("method not a string", br#"{"method":1,"params":[],"id":1}"#),
        ("no method", br#"{"params":[],"id":1}"#),
        ("jsonrpc 1.0", br#"{"jsonrpc":"1.0","method":"m","params":[],"id":1}"#),
        ("int overflow", br#"{"method":"m","params":[9223372036854775808],"id":1}"#),
        ("huge int", br#"{"method":"m","params":[123456789012345678901234567890],"id":1}"#),
        ("leading zero", br#"{"method":"m","params":[01],"id":1}"#),
        ("bare dot", br#"{"method":"m","params":[1.],"id":1}"#),
        ("plus sign", br#"{"method":"m","params":[+1],"id":1}"#),
        ("NaN", br#"{"method":"m","params":[NaN],"id":1}"#),
        ("trailing comma", br#"{"method":"m","params":[1,],"id":1}"#),
        ("trailing data", br#"{"method":"m","params":[],"id":1} x"#),
        ("single quotes", br#"{'method':"m","params":[],"id":1}"#),
        ("raw newline in string", b"{\"method\":\"a\nb\",\"params\":[],\"id\":1}"),
        ("bad escape", br#"{"method":"\x","params":[],"id":1}"#),
        ("lone surrogate", br#"{"method":"\ud800","params":[],"id":1}"#),
        ("lone low surrogate", br#"{"method":"\udc00","params":[],"id":1}"#),
        ("short unicode escape", br#"{"method":"\u12","params":[],"id":1}"#),
        ("invalid utf-8", b"{\"method\":\"\xc3\x28\",\"params\":[],\"id\":1}"),
    ];
    for (what, body) in cases {
        match jsonrpc::parse_call(body) {
            Err(WireError::Malformed(m)) => assert!(!m.is_empty(), "{what}"),
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
    }
    assert_eq!(jsonrpc::parse_call(deep_json("[", "]", 10_000).as_bytes()), Err(WireError::TooDeep(MAX_DEPTH)));
    assert_eq!(jsonrpc::parse_call(deep_json("{\"k\":", "}", 10_000).as_bytes()), Err(WireError::TooDeep(MAX_DEPTH)));
    assert_eq!(jsonrpc::parse_call(deep_json("[", "]", MAX_DEPTH + 1).as_bytes()), Err(WireError::TooDeep(MAX_DEPTH)));
    assert!(jsonrpc::parse_call(deep_json("[", "]", MAX_DEPTH).as_bytes()).is_ok());
    // A v2 object param is itself a level.
    let obj = format!(
        r#"{{"jsonrpc":"2.0","method":"m","params":{}1{},"id":1}}"#,
        "{\"k\":".repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(jsonrpc::parse_call(obj.as_bytes()), Err(WireError::TooDeep(MAX_DEPTH)));

    // Client side.
    for body in [
        &br#"{"result":1,"error":[],"id":1}"#[..],
        br#"{"jsonrpc":"2.0","id":1}"#,
        br#"{"jsonrpc":"2.0","result":1,"error":{"code":1,"message":"X"},"id":1}"#,
        br#"{"jsonrpc":"2.0","error":{"code":1},"id":1}"#,
        br#"{"result":null,"error":[1],"id":1}"#,
        br#"{"result":null}"#,
    ] {
        assert!(
            matches!(jsonrpc::parse_response(body), Err(WireError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        jsonrpc::parse_response(br#"{"jsonrpc":"2.0","error":{"code":1,"message":"X"},"id":1}"#),
        Ok(Err(vec!["X".to_string()]))
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Random mutations never panic.

/// xorshift64*: small, deterministic, good enough to pick positions and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutations_never_panic() {
    let e = env(Version::V2, serde_json::json!(1));
    let seeds: Vec<Vec<u8>> = vec![
        PYTHON_REQUEST.as_bytes().to_vec(),
        XO_REQUEST.as_bytes().to_vec(),
        xmlrpc::write_call("m", &[every_kind(), nested()]),
        xmlrpc::success(&every_kind()),
        xmlrpc::failure(&["A".into(), "b".into()]),
        jsonrpc::write_call("m", &[every_kind(), nested()], Version::V1, serde_json::json!("i")),
        jsonrpc::write_call("m", &[every_kind()], Version::V2, serde_json::json!(2)),
        jsonrpc::success(&e, &every_kind()),
        jsonrpc::failure(&e, &["A".into()]),
    ];
    let tokens: &[&[u8]] = &[
        b"<",
        b">",
        b"/>",
        b"&",
        b"&#",
        b"&amp;",
        b"&#x110000;",
        b"<!--",
        b"<![CDATA[",
        b"<?",
        b"<!DOCTYPE",
        b"<value>",
        b"</value>",
        b"<array><data>",
        b"<struct>",
        b"\"",
        b"\\u",
        b"\\ud800",
        b"[",
        b"{",
        b"}",
        b"]",
        b",",
        b":",
        b"-",
        b"1e999",
        b"\xff",
        b"\xc3",
        b"\r",
        b"\0",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..6000 {
        let mut body = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(body.len() + 1);
            match rng.below(6) {
                0 => body.truncate(at),
                1 if at < body.len() => body[at] = rng.next() as u8,
                2 if at < body.len() => {
                    body.remove(at);
                }
                3 => body.insert(at, rng.next() as u8),
                _ => {
                    let t = tokens[rng.below(tokens.len())];
                    body.splice(at..at, t.iter().copied());
                }
            }
        }
        let _ = xmlrpc::parse_call(&body);
        let _ = xmlrpc::parse_response(&body);
        let _ = xmlrpc::parse_result(&body);
        let _ = jsonrpc::parse_call(&body);
        let _ = jsonrpc::parse_response(&body);
    }
}

/// A value encoded by one sink splices into another of the same kind as if it had been emitted there.
#[test]
fn raw_values_splice_like_emitted_ones() {
    let record = Value::Struct(vec![("a".into(), Value::Int(1)), ("b".into(), Value::Array(vec![Value::str("x")]))]);
    let whole = Value::Struct(vec![
        ("first".into(), record.clone()),
        ("second".into(), Value::Array(vec![record.clone(), record.clone()])),
    ]);
    fn splice<S: Sink + Default + AsMut<Vec<u8>>>(record: &Value) -> Vec<u8> {
        let mut one = S::default();
        record.emit(&mut one);
        let encoded = std::mem::take(one.as_mut());
        let mut s = S::default();
        s.begin_struct();
        s.key("first");
        s.raw_value(&encoded);
        s.key("second");
        s.begin_array();
        s.raw_value(&encoded);
        s.raw_value(&encoded);
        s.end_array();
        s.end_struct();
        std::mem::take(s.as_mut())
    }
    let mut x = xmlrpc::XmlSink::new();
    whole.emit(&mut x);
    assert_eq!(String::from_utf8(splice::<xmlrpc::XmlSink>(&record)).unwrap(), String::from_utf8(x.out).unwrap());
    let mut j = jsonrpc::JsonSink::new();
    whole.emit(&mut j);
    assert_eq!(String::from_utf8(splice::<jsonrpc::JsonSink>(&record)).unwrap(), String::from_utf8(j.out).unwrap());
}
