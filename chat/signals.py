"""What chat tells the floors above it (analytics listens; see STYLE.md "The floors").

Every signal is sent inside the workspace schema that owns the conversation, after the change is committed
(`transaction.on_commit`), with keyword arguments only. Receivers must be quick and must never raise into the
sender: the answer path does not wait for them.
"""
from django.dispatch import Signal

# conversation: Conversation, channel: str
conversation_started = Signal()
# conversation: Conversation, message: Message (the customer's question)
question_asked = Signal()
# conversation: Conversation, message: Message (the assistant's stored answer, with answered/confidence/latencies,
# tokens, cost, provider and citations)
answer_completed = Signal()
# conversation: Conversation, message: Message, value: int (-1/0/1)
feedback_given = Signal()
# conversation: Conversation, message: Message (an agent's reply to the customer; not internal notes)
agent_replied = Signal()
# conversation: Conversation, reason: str ("asked" | "unanswered" | "rule" | ...)
handoff_requested = Signal()
# conversation: Conversation, agent: User | None
agent_joined = Signal()
# conversation: Conversation, closed_by: User | None
conversation_closed = Signal()
# public_ids: list[str] — conversations deleted by the workspace's retention rule (chat.retention)
conversations_purged = Signal()
# visitor_id: str, public_ids: list[str] — sent *synchronously* inside the erasure of one visitor (chat.visitors),
# before it commits: receivers remove what they copied of the visitor (analytics events and question texts, widget
# counters) and may raise, which rolls the erasure back rather than leaving a half-erased visitor.
visitor_erasing = Signal()

# conversation: Conversation, lead: Lead (chat.models), created: bool — a visitor filled in (or corrected) the
# widget's lead form; webhooks deliver it as `lead.captured`
lead_captured = Signal()
