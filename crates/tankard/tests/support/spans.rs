//! A span capture for tests: every span opened on the threads that use
//! it as their default subscriber, with its fields as last recorded.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One captured span: its name, level, parent (an index into the
/// capture, `None` for a root) and fields (`outcome` arrives by `record`).
#[derive(Clone, Debug)]
pub struct Span {
    pub name: &'static str,
    pub level: tracing::Level,
    pub parent: Option<usize>,
    pub fields: BTreeMap<&'static str, String>,
    /// Every handle of it was dropped.
    pub closed: bool,
    refs: usize,
}

impl Span {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    spans: Vec<Span>,
    /// The spans entered on each thread, innermost last.
    stack: std::collections::HashMap<std::thread::ThreadId, Vec<usize>>,
}

/// Captured spans; clones share them.
#[derive(Clone, Default)]
pub struct Spans(Arc<Mutex<State>>);

impl Spans {
    /// Every span captured so far.
    pub fn all(&self) -> Vec<Span> {
        self.0.lock().unwrap().spans.clone()
    }

    /// The captured spans called `name`.
    pub fn named(&self, name: &str) -> Vec<Span> {
        self.all().into_iter().filter(|s| s.name == name).collect()
    }

    /// Makes this capture the current thread's subscriber until the
    /// guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }
}

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

fn index(id: &tracing::span::Id) -> usize {
    id.into_u64() as usize - 1
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut state = self.0.lock().unwrap();
        let parent = if attrs.is_root() {
            None
        } else if let Some(parent) = attrs.parent() {
            Some(index(parent))
        } else {
            state
                .stack
                .get(&std::thread::current().id())
                .and_then(|stack| stack.last().copied())
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        state.spans.push(Span {
            name: attrs.metadata().name(),
            level: *attrs.metadata().level(),
            parent,
            fields,
            closed: false,
            refs: 1,
        });
        tracing::span::Id::from_u64(state.spans.len() as u64)
    }

    fn record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut state = self.0.lock().unwrap();
        values.record(&mut Fields(&mut state.spans[index(id)].fields));
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, id: &tracing::span::Id) {
        let mut state = self.0.lock().unwrap();
        let thread = std::thread::current().id();
        state.stack.entry(thread).or_default().push(index(id));
    }

    fn exit(&self, id: &tracing::span::Id) {
        let mut state = self.0.lock().unwrap();
        let thread = std::thread::current().id();
        if let Some(stack) = state.stack.get_mut(&thread)
            && let Some(at) = stack.iter().rposition(|i| *i == index(id))
        {
            stack.remove(at);
        }
    }

    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        self.0.lock().unwrap().spans[index(id)].refs += 1;
        id.clone()
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        let mut state = self.0.lock().unwrap();
        let span = &mut state.spans[index(&id)];
        span.refs -= 1;
        span.closed = span.refs == 0;
        span.closed
    }
}
