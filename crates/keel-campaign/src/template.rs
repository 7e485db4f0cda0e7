//! A campaign's subject, text and HTML templates: compiled once, rendered per recipient.
//!
//! minijinja, set up for mail that goes to many people:
//! - **strict undefined**: a variable a recipient lacks is an error, not an empty string — "Hi ,"
//!   sent to a hundred thousand people is worse than a refused recipient. The error names the
//!   recipient and the variable (`recipients[7] (bo@x.example): html: undefined variable
//!   `first_name``);
//! - **escaping by part**: variables in `html` are HTML-escaped (a name like `<script>` arrives
//!   as text), `text` and `subject` are not escaped (they are not HTML);
//! - **fuel**: each render has a budget of work (see [`TemplateLimits::fuel`]), so a template
//!   with a runaway loop fails that render instead of holding a core;
//! - **no line breaks in the subject**: the subject becomes a header, and a CR or LF coming from
//!   a variable would be a header injection, so the render is refused.
//!
//! Variables are the recipient's `vars`, plus `email` (the recipient's address) unless `vars`
//! sets it. Cost: compiling is done once per campaign; a render is microseconds for a short
//! template and grows with its output (see `examples/build_timing.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

use crate::error::FieldError;

/// Bounds on templates and what they produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// Largest template source, each of subject, text and html.
    pub max_source_bytes: usize,
    /// Work budget of one render of one part (minijinja fuel: about one unit per instruction
    /// and per 64 bytes of data made). 1,000,000 is far above what a 100 KB template with a
    /// few loops uses, and caps a runaway one at about 64 MB of output or a few tens of ms.
    pub fuel: u64,
    /// Longest rendered subject, in characters.
    pub max_subject_chars: usize,
    /// Largest rendered text or HTML body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits {
            max_source_bytes: 1024 * 1024,
            fuel: 1_000_000,
            max_subject_chars: 998,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Which template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    /// The request field, which is also the template's name.
    pub fn name(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One recipient's rendered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// A render that failed, naming the recipient, the part and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recipients[{index}] ({email}): {part}: {kind}")]
pub struct RenderError {
    pub index: u64,
    pub email: String,
    pub part: Part,
    pub kind: RenderErrorKind,
}

impl RenderError {
    /// The field path for an API answer.
    pub fn field(&self) -> String {
        format!("recipients[{}].vars", self.index)
    }
}

/// Why a render failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderErrorKind {
    /// The template reads variables this recipient does not have (dotted paths for
    /// attributes, e.g. `address.city`).
    #[error("undefined variable{} {}", if .0.len() == 1 { "" } else { "s" }, list(.0))]
    UndefinedVariables(Vec<String>),
    /// An undefined value the variable list cannot pin down (e.g. an index out of range);
    /// the text is minijinja's, with the line.
    #[error("{0}")]
    Undefined(String),
    /// The render used up its fuel: a loop that does not end, or far too much output.
    #[error("the template used up its work budget (a runaway loop?)")]
    OutOfFuel,
    /// A line break or control character in the rendered subject.
    #[error("the rendered subject contains a line break or control character (header injection)")]
    HeaderInjection,
    #[error("the rendered {0} is larger than {1} bytes")]
    TooLarge(&'static str, usize),
    /// Any other template error (a bad filter argument, a type error...), minijinja's text.
    #[error("{0}")]
    Other(String),
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The compiled templates of one campaign.
pub struct CampaignTemplate {
    env: Environment<'static>,
    text: bool,
    html: bool,
    limits: TemplateLimits,
    /// Variables (dotted paths) each part reads from the context, to name missing ones.
    variables: BTreeMap<Part, BTreeSet<String>>,
}

impl fmt::Debug for CampaignTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CampaignTemplate")
            .field("text", &self.text)
            .field("html", &self.html)
            .field("variables", &self.variables)
            .finish()
    }
}

impl CampaignTemplate {
    /// Compiles the parts; every syntax error is reported at its field with its line.
    pub fn compile(
        subject: &str,
        text: Option<&str>,
        html: Option<&str>,
        limits: &TemplateLimits,
    ) -> Result<CampaignTemplate, Vec<FieldError>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(limits.fuel));
        env.set_auto_escape_callback(|name| {
            if name == Part::Html.name() {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // Mail bodies keep the newline they end with, as written.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }

        let mut errors = Vec::new();
        let parts = [
            (Part::Subject, Some(subject)),
            (Part::Text, text),
            (Part::Html, html),
        ];
        for (part, source) in parts {
            let Some(source) = source else { continue };
            if source.len() > limits.max_source_bytes {
                errors.push(FieldError::new(
                    part.name(),
                    format!(
                        "the template is larger than {} bytes",
                        limits.max_source_bytes
                    ),
                ));
                continue;
            }
            if let Err(e) = env.add_template_owned(part.name(), source.to_owned()) {
                errors.push(FieldError::new(
                    part.name(),
                    format!("template error: {}", describe(&e)),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut variables = BTreeMap::new();
        for (part, source) in parts {
            if source.is_some()
                && let Ok(t) = env.get_template(part.name())
            {
                variables.insert(part, t.undeclared_variables(true).into_iter().collect());
            }
        }
        Ok(CampaignTemplate {
            env,
            text: text.is_some(),
            html: html.is_some(),
            limits: *limits,
            variables,
        })
    }

    /// The top-level variables the templates read (for API answers and documentation).
    pub fn variables(&self) -> BTreeSet<String> {
        self.variables
            .values()
            .flatten()
            .map(|v| v.split('.').next().unwrap_or(v).to_string())
            .collect()
    }

    /// Renders every part for one recipient.
    pub fn render(
        &self,
        index: u64,
        email: &str,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Rendered, RenderError> {
        let mut context: BTreeMap<String, Value> =
            vars.iter().map(|(k, v)| (k.clone(), to_value(v))).collect();
        context
            .entry("email".to_string())
            .or_insert_with(|| Value::from(email));
        let context = Value::from(context);
        let fail = |part: Part, kind: RenderErrorKind| RenderError {
            index,
            email: email.to_string(),
            part,
            kind,
        };

        let subject = self
            .render_part(Part::Subject, &context, vars, email)
            .map_err(|k| fail(Part::Subject, k))?;
        if subject.chars().any(|c| c.is_control() && c != '\t') {
            return Err(fail(Part::Subject, RenderErrorKind::HeaderInjection));
        }
        if subject.chars().count() > self.limits.max_subject_chars {
            return Err(fail(
                Part::Subject,
                RenderErrorKind::TooLarge("subject", self.limits.max_subject_chars),
            ));
        }
        let body = |part: Part, present: bool| -> Result<Option<String>, RenderError> {
            if !present {
                return Ok(None);
            }
            let out = self
                .render_part(part, &context, vars, email)
                .map_err(|k| fail(part, k))?;
            if out.len() > self.limits.max_body_bytes {
                return Err(fail(
                    part,
                    RenderErrorKind::TooLarge(part.name(), self.limits.max_body_bytes),
                ));
            }
            Ok(Some(out))
        };
        let text = body(Part::Text, self.text)?;
        let html = body(Part::Html, self.html)?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    fn render_part(
        &self,
        part: Part,
        context: &Value,
        vars: &serde_json::Map<String, serde_json::Value>,
        email: &str,
    ) -> Result<String, RenderErrorKind> {
        let template = self
            .env
            .get_template(part.name())
            .map_err(|e| RenderErrorKind::Other(describe(&e)))?;
        template.render(context).map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => RenderErrorKind::OutOfFuel,
            ErrorKind::UndefinedError => {
                let missing: Vec<String> = self
                    .variables
                    .get(&part)
                    .into_iter()
                    .flatten()
                    .filter(|path| !is_defined(path, vars, email))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    RenderErrorKind::Undefined(describe(&e))
                } else {
                    RenderErrorKind::UndefinedVariables(missing)
                }
            }
            _ => RenderErrorKind::Other(describe(&e)),
        })
    }
}

/// minijinja's message with the template line, without its debug dump.
fn describe(e: &minijinja::Error) -> String {
    let detail = e.detail().unwrap_or("");
    let what = match e.kind() {
        ErrorKind::SyntaxError => "syntax error",
        ErrorKind::UndefinedError => "undefined value",
        ErrorKind::UnknownFilter => "unknown filter",
        ErrorKind::UnknownFunction => "unknown function",
        ErrorKind::UnknownTest => "unknown test",
        ErrorKind::UnknownMethod => "unknown method",
        ErrorKind::InvalidOperation => "invalid operation",
        _ => "error",
    };
    let mut out = what.to_string();
    if !detail.is_empty() {
        out.push_str(": ");
        out.push_str(detail);
    }
    if let Some(line) = e.line() {
        out.push_str(&format!(" (line {line})"));
    }
    out
}

/// Whether a dotted variable path resolves in the recipient's context.
fn is_defined(path: &str, vars: &serde_json::Map<String, serde_json::Value>, email: &str) -> bool {
    let mut segments = path.split('.');
    let Some(first) = segments.next() else {
        return true;
    };
    let Some(mut value) = vars.get(first) else {
        return first == "email" && !email.is_empty() && segments.next().is_none();
    };
    for segment in segments {
        match value {
            serde_json::Value::Object(map) => match map.get(segment) {
                Some(v) => value = v,
                None => return false,
            },
            // Attributes of other types (a list's methods...) are not ours to judge.
            _ => return true,
        }
    }
    true
}

/// JSON → template value. Recursion is bounded by serde_json's own nesting limit (128).
fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(subject: &str, text: Option<&str>, html: Option<&str>) -> CampaignTemplate {
        CampaignTemplate::compile(subject, text, html, &TemplateLimits::default())
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn vars(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => panic!("vars must be an object"),
        }
    }

    #[test]
    fn personalises_and_escapes_only_html() {
        let t = compile(
            "Hi {{ first_name }}",
            Some("Hello {{ first_name }} <{{ email }}>\n"),
            Some("<p>Hello {{ first_name }}</p>"),
        );
        let r = t
            .render(0, "ann@x.example", &vars(json!({"first_name": "Ann <b>&"})))
            .unwrap();
        assert_eq!(r.subject, "Hi Ann <b>&");
        assert_eq!(r.text.as_deref(), Some("Hello Ann <b>& <ann@x.example>\n"));
        assert_eq!(r.html.as_deref(), Some("<p>Hello Ann &lt;b&gt;&amp;</p>"));
        assert_eq!(
            t.variables().into_iter().collect::<Vec<_>>(),
            ["email", "first_name"]
        );
    }

    #[test]
    fn loops_conditionals_and_nested_vars() {
        let t = compile(
            "{{ order.id }}",
            Some(
                "{% for i in items %}{{ loop.index }}. {{ i.name }}\n{% endfor %}{% if vip is defined %}VIP{% endif %}",
            ),
            None,
        );
        let r = t
            .render(
                0,
                "a@x.example",
                &vars(json!({"order": {"id": 42}, "items": [{"name": "tea"}, {"name": "cup"}]})),
            )
            .unwrap();
        assert_eq!(r.subject, "42");
        assert_eq!(r.text.as_deref(), Some("1. tea\n2. cup\n"));
        assert_eq!(r.html, None);
    }

    #[test]
    fn undefined_variables_name_recipient_and_variable() {
        let t = compile(
            "Hi {{ first_name }}",
            None,
            Some("<p>{{ address.city }}</p>"),
        );
        let e = t
            .render(7, "bo@x.example", &vars(json!({"last_name": "Bo"})))
            .unwrap_err();
        assert_eq!(e.index, 7);
        assert_eq!(e.part, Part::Subject);
        assert_eq!(
            e.kind,
            RenderErrorKind::UndefinedVariables(vec!["first_name".into()])
        );
        assert_eq!(
            e.to_string(),
            "recipients[7] (bo@x.example): subject: undefined variable `first_name`"
        );
        let e = t
            .render(
                8,
                "cy@x.example",
                &vars(json!({"first_name": "Cy", "address": {"street": "Main"}})),
            )
            .unwrap_err();
        assert_eq!(e.part, Part::Html);
        assert_eq!(
            e.kind,
            RenderErrorKind::UndefinedVariables(vec!["address.city".into()])
        );
        assert_eq!(e.field(), "recipients[8].vars");
    }

    #[test]
    fn fuel_stops_a_runaway_template() {
        let t = compile(
            "x",
            Some(
                "{% for i in range(100000) %}{% for j in range(100000) %}{{ i * j }}{% endfor %}{% endfor %}",
            ),
            None,
        );
        let started = std::time::Instant::now();
        let e = t.render(0, "a@x.example", &vars(json!({}))).unwrap_err();
        assert_eq!(e.kind, RenderErrorKind::OutOfFuel);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Exponential output from a short template is capped too.
        let t = compile(
            "x",
            Some(
                "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            ),
            None,
        );
        let e = t.render(0, "a@x.example", &vars(json!({}))).unwrap_err();
        assert!(matches!(e.kind, RenderErrorKind::OutOfFuel), "{:?}", e.kind);
        let t = compile("x", Some("{{ 'x' * 100000000 }}"), None);
        let e = t.render(0, "a@x.example", &vars(json!({}))).unwrap_err();
        assert_eq!(e.kind, RenderErrorKind::OutOfFuel);
    }

    #[test]
    fn a_line_break_in_the_subject_is_refused() {
        let t = compile("Hi {{ name }}", Some("x"), None);
        let e = t
            .render(
                3,
                "a@x.example",
                &vars(json!({"name": "Ann\r\nBcc: victim@y.example"})),
            )
            .unwrap_err();
        assert_eq!(e.kind, RenderErrorKind::HeaderInjection);
        assert_eq!(e.part, Part::Subject);
        // In the body a line break is just text.
        let t = compile("Hi", Some("{{ name }}"), None);
        assert!(
            t.render(3, "a@x.example", &vars(json!({"name": "a\r\nb"})))
                .is_ok()
        );
    }

    #[test]
    fn syntax_errors_name_the_field_and_line() {
        let e = CampaignTemplate::compile(
            "ok",
            Some("line one\n{% for x in %}"),
            Some("{{ unclosed"),
            &TemplateLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].field, "text");
        assert!(e[0].message.contains("line 2"), "{}", e[0].message);
        assert_eq!(e[1].field, "html");
    }
}
