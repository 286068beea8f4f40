//! The log query syntax: tantivy's grammar with our checks in front of it, parsed into the
//! tree that [`verify`] searches with. Needs no segment, store or catalog, so the fuzz target
//! builds it without the storage crate (feature `segments` off).

use tantivy::Index;
use tantivy::query::QueryParser;
use tantivy::query_grammar::{self, Occur as GrammarOccur, UserInputAst, UserInputLeaf};
use tantivy::tokenizer::TextAnalyzer;

use crate::IndexError;
use crate::schema::{self, Fields};
use crate::verify::{self, LogQuery};

/// Longest log query text.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Deepest nesting of groups, or run of prefix operators (`-`, `+`, `NOT`), in a log query.
pub const MAX_QUERY_DEPTH: usize = 32;

/// Tantivy's query grammar and the tree built from it recurse once per level of nesting: a
/// query of 100,000 `(` overflowed the stack and aborted the process. Refuse what could.
fn check_query_shape(q: &str) -> Result<(), IndexError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(IndexError::Invalid(format!(
            "the query is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
            q.len()
        )));
    }
    // Tantivy separates JSON path segments with \x01 and ends paths with \x00: one of those in
    // a field name (`attributes.a\x01b:x`) trips an assertion in its parser (found by fuzzing).
    if q.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(IndexError::Invalid("the query holds control characters; at most whitespace is accepted".into()));
    }
    let (mut depth, mut deepest, mut prefixes, mut most_prefixes, mut quoted) = (0usize, 0, 0usize, 0, false);
    for word in q.split_whitespace() {
        if word == "NOT" && !quoted {
            prefixes += 1;
            most_prefixes = most_prefixes.max(prefixes);
            continue;
        }
        let mut leading = true;
        for c in word.chars() {
            match c {
                '"' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth = depth.saturating_sub(1),
                '-' | '+' if !quoted && leading => {
                    prefixes += 1;
                    most_prefixes = most_prefixes.max(prefixes);
                    continue;
                }
                _ => {}
            }
            deepest = deepest.max(depth);
            if !matches!(c, '(' | '-' | '+') {
                leading = false;
                prefixes = 0;
            }
        }
    }
    if deepest > MAX_QUERY_DEPTH || most_prefixes > MAX_QUERY_DEPTH {
        return Err(IndexError::Invalid(format!(
            "the query nests {} levels deep; at most {MAX_QUERY_DEPTH} are accepted",
            deepest.max(most_prefixes)
        )));
    }
    Ok(())
}

/// `AND` and `OR` between two terms. The lenient grammar reads a dangling operator (`a AND`,
/// `a AND OR b`) as a word to search for; the strict grammar refuses it, and so do we.
fn check_operators(q: &str) -> Result<(), String> {
    let mut previous: Option<&str> = None;
    let mut quoted = false;
    for word in q.split_whitespace() {
        let operator = (!quoted && matches!(word, "AND" | "OR" | "&&" | "||")).then_some(word);
        if let Some(op) = operator
            && matches!(previous, None | Some("AND" | "OR" | "&&" | "||" | "NOT"))
        {
            return Err(format!("{op} needs a term before it"));
        }
        quoted ^= word.matches('"').count() % 2 == 1;
        previous = Some(if quoted { "\"" } else { word });
    }
    match previous {
        Some(op @ ("AND" | "OR" | "&&" | "||" | "NOT")) => Err(format!("{op} needs a term after it")),
        _ => Ok(()),
    }
}

/// The log query syntax on its own: what every search parses its text with (and what the
/// fuzz target exercises).
pub struct LogSyntax {
    /// An empty index that only lends its schema and tokenizers to the query parser.
    index: Index,
    fields: Fields,
    /// The analyzer of the text fields: how phrases are split into words.
    words: TextAnalyzer,
}

impl Default for LogSyntax {
    fn default() -> Self {
        LogSyntax::new()
    }
}

impl LogSyntax {
    pub fn new() -> LogSyntax {
        let (schema, fields) = schema::schema();
        let index = Index::create_in_ram(schema);
        schema::register_tokenizers(&index);
        let words = index.tokenizers().get("default").expect("tantivy registers its default analyzer");
        LogSyntax { index, fields, words }
    }

    /// The fields of the index schema the syntax parses against.
    #[cfg(feature = "segments")]
    pub(crate) fn fields(&self) -> Fields {
        self.fields
    }

    /// Parses a query in tantivy's syntax. Bare words search the body and attribute values and
    /// must all match (`payment timeout` = `payment AND timeout`). Phrases and trace IDs are
    /// resolved per index when searched ([`verify`]).
    pub fn parse(&self, q: &str) -> Result<LogQuery, IndexError> {
        if q.trim().is_empty() {
            return Ok(LogQuery::new(verify::everything(), self.words.clone()));
        }
        check_query_shape(q)?;
        // Tantivy's lenient grammar loops forever, allocating, on whitespace other than space,
        // tab, CR and LF inside `IN [...]` (a vertical tab or a no-break space; found by
        // fuzzing): it splits words on all Unicode whitespace but skips only those four.
        // Every other whitespace character becomes a space, which is what it separates anyway.
        let spaced: String;
        let q = if q.chars().any(|c| c.is_whitespace() && !matches!(c, ' ' | '\t' | '\n' | '\r')) {
            spaced = q.chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
            spaced.as_str()
        } else {
            q
        };
        let mut parser = QueryParser::for_index(&self.index, vec![self.fields.body, self.fields.attr_values]);
        parser.set_conjunction_by_default();
        let invalid = |e: &dyn std::fmt::Display| {
            IndexError::Invalid(format!(
                "cannot parse query {q:?}: {e}. Fields: body, attributes.<key>, service, severity, trace_id; \
                 operators AND, OR, NOT (or -word), \"phrases\", (groups)"
            ))
        };
        // The lenient grammar, not the strict one: the strict grammar backtracks at every group
        // and takes time exponential in the nesting (a 33-byte `((((…a))))` took seconds, found
        // by fuzzing). The lenient one is linear; whatever it had to repair is refused here, so
        // what it accepts is what the strict grammar accepts, the same tree.
        let (ast, repairs) = query_grammar::parse_query_lenient(q);
        if let Some(e) = repairs.first() {
            return Err(invalid(&format_args!("{} at byte {}", e.message, e.pos)));
        }
        check_operators(q).map_err(|e| invalid(&e))?;
        let root = verify::build(&parser, &self.words, lift_negations(ast)).map_err(|e| invalid(&e))?;
        if let Some(n) = root.as_ref().map(verify::phrases).filter(|n| *n > verify::MAX_PHRASES) {
            return Err(invalid(&format_args!(
                "{n} phrase checks (a bare phrase counts twice: body and attribute values); a query may hold at most {}",
                verify::MAX_PHRASES
            )));
        }
        // A query of no words at all (`"!!"`) finds nothing, as tantivy's parser has it.
        Ok(LogQuery::new(root.unwrap_or_else(verify::nothing), self.words.clone()))
    }
}

/// `a AND NOT b` parses as `a AND (NOT b)`, and a group holding only exclusions matches
/// nothing in tantivy, so the query would find nothing. Lifts such exclusions into the
/// enclosing group, and gives a group of only exclusions something to exclude from.
pub(crate) fn lift_negations(ast: UserInputAst) -> UserInputAst {
    let only_exclusions = |items: &[(Option<GrammarOccur>, UserInputAst)]| {
        !items.is_empty() && items.iter().all(|(o, _)| *o == Some(GrammarOccur::MustNot))
    };
    match ast {
        UserInputAst::Clause(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (occur, sub) in items {
                match (occur, lift_negations(sub)) {
                    (None | Some(GrammarOccur::Must), UserInputAst::Clause(inner)) if only_exclusions(&inner) => {
                        out.extend(inner)
                    }
                    (o, s) => out.push((o, s)),
                }
            }
            if only_exclusions(&out) {
                out.push((Some(GrammarOccur::Must), UserInputAst::Leaf(Box::new(UserInputLeaf::All))));
            }
            UserInputAst::Clause(out)
        }
        UserInputAst::Boost(inner, boost) => UserInputAst::Boost(Box::new(lift_negations(*inner)), boost),
        leaf => leaf,
    }
}
