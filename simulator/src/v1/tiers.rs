//! The v1 API's rate tiers: which endpoint class a request counts against and how many requests
//! of that class one caller may make per hour. Callers with a token are counted per account,
//! callers without one per IP address; both windows are sliding and one hour long (scaled by the
//! simulator's time scale), like every other window the simulator enforces.

/// An endpoint class of the v1 API, each with its own hourly window per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// `POST /auth/login`, `POST /auth/refresh`: always per IP (they carry no token).
    Auth,
    /// `GET /users/{id}`.
    UserLookup,
    /// `GET /feed`, `GET /explore`, `GET /stories/feed`.
    Feed,
    /// A user's posts, one post, a post's comments.
    Media,
    /// Followers and following lists.
    Graph,
    /// `GET /search/{users,hashtags,locations}`.
    Search,
    /// `GET /notifications`.
    Notifications,
    /// `POST /posts`.
    PostUpload,
    /// `POST /stories`.
    StoryUpload,
    /// `POST` and `DELETE /users/{id}/follow`.
    Follow,
    /// Likes, comments, story views, deleting a post, editing a profile.
    Interaction,
    /// Opening the realtime stream.
    Stream,
}

impl Tier {
    pub const ALL: [Tier; 12] = [
        Tier::Auth,
        Tier::UserLookup,
        Tier::Feed,
        Tier::Media,
        Tier::Graph,
        Tier::Search,
        Tier::Notifications,
        Tier::PostUpload,
        Tier::StoryUpload,
        Tier::Follow,
        Tier::Interaction,
        Tier::Stream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Auth => "auth",
            Tier::UserLookup => "user_lookup",
            Tier::Feed => "feed",
            Tier::Media => "media",
            Tier::Graph => "graph",
            Tier::Search => "search",
            Tier::Notifications => "notifications",
            Tier::PostUpload => "post_upload",
            Tier::StoryUpload => "story_upload",
            Tier::Follow => "follow",
            Tier::Interaction => "interaction",
            Tier::Stream => "stream",
        }
    }

    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The audit log's and the windows' label, `v1:<tier>`.
    pub fn label(self) -> String {
        format!("v1:{}", self.name())
    }

    /// The tier a `v1:<tier>` label names.
    pub fn from_label(label: &str) -> Option<Tier> {
        label.strip_prefix("v1:").and_then(Tier::from_name)
    }

    /// Requests per hour: for a caller with a token, or for one without (`None`: the endpoints of
    /// this class need a token). The document's numbers where it gives them (uploads, feed,
    /// search, follow; anonymous search and user lookup); the rest are this simulator's choice,
    /// written down in docs/simulator.md.
    pub fn per_hour(self, anonymous: bool) -> Option<usize> {
        let (with_token, without) = match self {
            Tier::Auth => (60, Some(60)),
            Tier::UserLookup => (200, Some(50)),
            Tier::Feed => (200, None),
            Tier::Media => (300, None),
            Tier::Graph => (200, None),
            Tier::Search => (100, Some(20)),
            Tier::Notifications => (100, None),
            Tier::PostUpload => (50, None),
            Tier::StoryUpload => (100, None),
            Tier::Follow => (200, None),
            Tier::Interaction => (200, None),
            Tier::Stream => (60, None),
        };
        if anonymous { without } else { Some(with_token) }
    }
}

#[cfg(test)]
mod tests {
    use super::Tier;

    #[test]
    fn names_round_trip_and_the_documents_numbers_hold() {
        for t in Tier::ALL {
            assert_eq!(Tier::from_label(&t.label()), Some(t));
        }
        assert_eq!(Tier::PostUpload.per_hour(false), Some(50));
        assert_eq!(Tier::StoryUpload.per_hour(false), Some(100));
        assert_eq!(Tier::Feed.per_hour(false), Some(200));
        assert_eq!(Tier::Search.per_hour(false), Some(100));
        assert_eq!(Tier::Follow.per_hour(false), Some(200));
        assert_eq!(Tier::Search.per_hour(true), Some(20));
        assert_eq!(Tier::UserLookup.per_hour(true), Some(50));
        assert_eq!(Tier::Feed.per_hour(true), None);
    }
}
