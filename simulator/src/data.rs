//! The deterministic data set. Everything is a pure function of the seed: users are generated at
//! load (with their follow graph), while posts and comments are computed on demand from
//! (seed, user, index), so 100,000 users with millions of posts fit in tens of megabytes.

/// splitmix64 over the inputs: the one source of randomness, so the same seed gives the same bytes.
/// The password of the simulator's generated account `sim_account{k}` (`trawl sim --accounts N`):
/// deterministic, so tests, benchmarks and the demo can log in without reading the server's output.
pub fn generated_account(seed: u64, k: usize) -> (String, String) {
    (
        format!("sim_account{k}"),
        format!("{:016x}", mix(seed, 77, k as u64, 0)),
    )
}

pub fn mix(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ c.wrapping_mul(0x1656_67B1_9E37_79F9);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ra", "ne", "to", "vi", "sa", "du", "pe", "zo", "li", "ba", "fe", "gu", "ho",
    "ju", "ki", "mo", "nu", "qi", "ru", "so", "ty",
];
const FIRST: [&str; 16] = [
    "Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kaya",
    "Luca", "Mina", "Nils", "Olga", "Priya",
];
const LAST: [&str; 16] = [
    "Almeida", "Berg", "Castro", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ivanova",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov",
];
pub const TAGS: [&str; 20] = [
    "archaeology",
    "astronomy",
    "birding",
    "streetart",
    "volcano",
    "fossils",
    "glacier",
    "coral",
    "desert",
    "harbour",
    "lighthouse",
    "mosaic",
    "nebula",
    "orchid",
    "pottery",
    "quarry",
    "reef",
    "savanna",
    "tundra",
    "wetland",
];
const WORDS: [&str; 20] = [
    "morning", "light", "over", "the", "old", "harbour", "field", "notes", "from", "a", "long",
    "walk", "quiet", "river", "after", "rain", "found", "this", "near", "home",
];
const PLACES: [&str; 8] = [
    "Lisbon",
    "Reykjavik",
    "Kyoto",
    "Nairobi",
    "Valparaiso",
    "Tromso",
    "Hobart",
    "Marrakesh",
];

/// Most likers a post's likers list shows.
pub const MAX_LIKERS: u64 = 100;

/// Users in a logged-in account's story tray.
pub const TRAY_SIZE: usize = 10;

const USER_ID_BASE: u64 = 1_000_000;
const USER_ID_STRIDE: u64 = 1_000_003;

/// Ids that do not look sequential but map back to their index by one division: the scrambled
/// part is always below the stride.
fn user_id(index: u32) -> u64 {
    let i = u64::from(index);
    USER_ID_BASE + i * USER_ID_STRIDE + i * 7919 % USER_ID_STRIDE
}

/// Posts are dated backwards from this instant (2026-01-01T00:00:00Z), so data never depends on
/// the wall clock.
pub const EPOCH: i64 = 1_767_225_600;

#[derive(Debug, Clone)]
pub struct User {
    pub index: u32,
    pub id: u64,
    pub username: String,
    pub full_name: String,
    pub biography: String,
    pub is_private: bool,
    pub is_verified: bool,
    pub post_count: u32,
    /// Indexes of the users this one follows, sorted.
    pub following: Vec<u32>,
    /// Indexes of the users following this one, sorted.
    pub followers: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostType {
    Image,
    Sidecar(u8),
    Video,
}

#[derive(Debug, Clone)]
pub struct Post {
    pub owner: u32,
    /// 0 is the newest post of its owner.
    pub index: u32,
    pub id: u64,
    pub shortcode: String,
    pub kind: PostType,
    pub caption: String,
    pub taken_at: i64,
    pub likes: u64,
    pub comment_count: u32,
    pub location: Option<&'static str>,
    pub tagged: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub owner: u32,
    pub text: String,
    pub created_at: i64,
    pub likes: u64,
}

/// Sizes of a generated data set.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub users: u32,
    /// Most posts a user has (counts are spread from 0 to this).
    pub max_posts: u32,
    /// Most accounts a user follows.
    pub max_following: u32,
    /// Most comments on a post.
    pub max_comments: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            users: 1000,
            max_posts: 60,
            max_following: 80,
            max_comments: 40,
        }
    }
}

pub struct DataSet {
    pub seed: u64,
    pub sizes: Sizes,
    pub users: Vec<User>,
    by_name: std::collections::HashMap<String, u32>,
    /// Hashtag → public posts carrying it, newest first, as (owner, index).
    hashtags: std::collections::HashMap<&'static str, Vec<(u32, u32)>>,
    /// User → public posts they are tagged in, newest first.
    tagged_in: Vec<Vec<(u32, u32)>>,
    /// Place (index in [`PLACES`]) → public posts located there, newest first.
    located: Vec<Vec<(u32, u32)>>,
}

/// A place posts are located at, with the numbers Instagram gives a location.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub id: u64,
    pub name: &'static str,
    pub lat: f64,
    pub lng: f64,
}

impl Place {
    /// Instagram's slug: the lowercased name.
    pub fn slug(&self) -> String {
        self.name.to_lowercase()
    }
}

/// Coordinates of [`PLACES`], in its order.
const PLACE_COORDS: [(f64, f64); 8] = [
    (38.7223, -9.1393),
    (64.1466, -21.9426),
    (35.0116, 135.7681),
    (-1.2921, 36.8219),
    (-33.0472, -71.6127),
    (69.6492, 18.9553),
    (-42.8821, 147.3272),
    (31.6295, -7.9811),
];

/// Location ids are this plus the place's index: unique, and far from user and post ids.
const PLACE_ID_BASE: u64 = 212_988_600;

/// The place named `name`, if posts can be located there.
pub fn place_by_name(name: &str) -> Option<Place> {
    PLACES.iter().position(|p| *p == name).map(place)
}

/// The place with location id `id`.
pub fn place_by_id(id: u64) -> Option<Place> {
    let index = usize::try_from(id.checked_sub(PLACE_ID_BASE)?).ok()?;
    (index < PLACES.len()).then(|| place(index))
}

/// Every place, in id order.
pub fn places() -> impl Iterator<Item = Place> {
    (0..PLACES.len()).map(place)
}

fn place(index: usize) -> Place {
    Place {
        id: PLACE_ID_BASE + index as u64,
        name: PLACES[index],
        lat: PLACE_COORDS[index].0,
        lng: PLACE_COORDS[index].1,
    }
}

const SHORTCODE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn shortcode(mut id: u64) -> String {
    let mut out = Vec::new();
    while id > 0 {
        out.push(SHORTCODE_ALPHABET[(id % 64) as usize]);
        id /= 64;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn shortcode_to_id(code: &str) -> Option<u64> {
    let mut id: u64 = 0;
    for b in code.bytes() {
        let v = SHORTCODE_ALPHABET.iter().position(|&c| c == b)? as u64;
        id = id.checked_mul(64)?.checked_add(v)?;
    }
    Some(id)
}

impl DataSet {
    pub fn generate(seed: u64, sizes: Sizes) -> Self {
        let n = sizes.users.max(2);
        let mut users: Vec<User> = (0..n)
            .map(|i| {
                let r = |k: u64| mix(seed, 1, u64::from(i), k);
                let a = SYLLABLES[(r(1) % 24) as usize];
                let b = SYLLABLES[(r(2) % 24) as usize];
                let c = SYLLABLES[(r(3) % 24) as usize];
                let sep = if r(4) % 3 == 0 { "_" } else { "" };
                let first = FIRST[(r(5) % 16) as usize];
                let last = LAST[(r(6) % 16) as usize];
                // Heavy-tailed: most users post a little, a few post a lot.
                let posts =
                    ((r(7) % 1000) as f64 / 1000.0).powi(2) * f64::from(sizes.max_posts + 1);
                User {
                    index: i,
                    id: user_id(i),
                    username: format!("{a}{b}{sep}{c}{i}"),
                    full_name: format!("{first} {last}"),
                    biography: format!(
                        "{} {} {} · {}",
                        WORDS[(r(8) % 20) as usize],
                        WORDS[(r(9) % 20) as usize],
                        WORDS[(r(10) % 20) as usize],
                        PLACES[(r(11) % 8) as usize]
                    ),
                    is_private: r(12) % 10 == 0,
                    is_verified: r(13) % 50 == 0,
                    post_count: (posts as u32).min(sizes.max_posts),
                    following: Vec::new(),
                    followers: Vec::new(),
                }
            })
            .collect();
        for i in 0..n {
            let count = mix(seed, 2, u64::from(i), 0) % u64::from(sizes.max_following + 1);
            let mut following: Vec<u32> = (0..count)
                .map(|j| (mix(seed, 3, u64::from(i), j) % u64::from(n)) as u32)
                .filter(|&v| v != i)
                .collect();
            following.sort_unstable();
            following.dedup();
            users[i as usize].following = following;
        }
        for i in 0..n {
            let following = std::mem::take(&mut users[i as usize].following);
            for &v in &following {
                users[v as usize].followers.push(i);
            }
            users[i as usize].following = following;
        }
        let by_name = users
            .iter()
            .map(|u| (u.username.clone(), u.index))
            .collect();
        let mut set = Self {
            seed,
            sizes,
            users,
            by_name,
            hashtags: std::collections::HashMap::new(),
            tagged_in: vec![Vec::new(); n as usize],
            located: vec![Vec::new(); PLACES.len()],
        };
        set.index_posts();
        set
    }

    /// Builds the hashtag and photos-of-you indexes from the posts' tags, without building posts.
    fn index_posts(&mut self) {
        let mut hashtags: std::collections::HashMap<&'static str, Vec<(i64, u32, u32)>> =
            std::collections::HashMap::new();
        let mut tagged: Vec<Vec<(i64, u32, u32)>> = vec![Vec::new(); self.users.len()];
        let mut located: Vec<Vec<(i64, u32, u32)>> = vec![Vec::new(); PLACES.len()];
        for u in self.users.iter().filter(|u| !u.is_private) {
            for j in 0..u.post_count {
                let taken = self.taken_at(u.index, j);
                if let Some(place) = self.post_place(u.index, j) {
                    located[place].push((taken, u.index, j));
                }
                let tags = self.post_tags(u.index, j);
                hashtags
                    .entry(tags[0])
                    .or_default()
                    .push((taken, u.index, j));
                if tags[1] != tags[0] {
                    hashtags
                        .entry(tags[1])
                        .or_default()
                        .push((taken, u.index, j));
                }
                for v in self.post_tagged(u.index, j) {
                    tagged[v as usize].push((taken, u.index, j));
                }
            }
        }
        let newest_first = |mut v: Vec<(i64, u32, u32)>| {
            v.sort_unstable_by(|a, b| b.cmp(a));
            v.into_iter().map(|(_, o, j)| (o, j)).collect::<Vec<_>>()
        };
        self.hashtags = hashtags
            .into_iter()
            .map(|(tag, posts)| (tag, newest_first(posts)))
            .collect();
        self.tagged_in = tagged.into_iter().map(newest_first).collect();
        self.located = located.into_iter().map(newest_first).collect();
    }

    /// The index in [`PLACES`] of a post's location, if it has one.
    fn post_place(&self, owner: u32, index: u32) -> Option<usize> {
        self.post_roll(owner, index, 13)
            .is_multiple_of(3)
            .then(|| (self.post_roll(owner, index, 14) % 8) as usize)
    }

    /// Public posts located at `place`, newest first, as (owner, index).
    pub fn location_posts(&self, place: &Place) -> &[(u32, u32)] {
        usize::try_from(place.id - PLACE_ID_BASE)
            .ok()
            .and_then(|i| self.located.get(i))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The post with media id `id`, found arithmetically like users.
    pub fn post_by_id(&self, id: u64) -> Option<Post> {
        let owner = u32::try_from((id >> 20).checked_sub(1)?).ok()?;
        let index = u32::try_from(id & 0xF_FFFF).ok()?;
        self.post(owner, index).filter(|p| p.id == id)
    }

    /// Who liked a post, as far as Instagram lists them: at most [`MAX_LIKERS`] distinct users,
    /// drawn from the post's id (the data set has like counts, not like lists).
    pub fn likers(&self, post: &Post) -> Vec<u32> {
        let n = self.users.len() as u64;
        let mut out: Vec<u32> = (0..post.likes.min(MAX_LIKERS))
            .map(|k| (mix(self.seed, 16, post.id, k) % n) as u32)
            .collect();
        let mut seen = std::collections::HashSet::new();
        out.retain(|u| seen.insert(*u));
        out
    }

    /// How many current story items a user has (0 to 3); a private user shows none.
    pub fn story_count(&self, user: &User) -> u64 {
        mix(self.seed, 8, u64::from(user.index), 0) % 4
    }

    /// How many highlights a user has (0 to 3).
    pub fn highlight_count(&self, user: &User) -> u64 {
        mix(self.seed, 14, u64::from(user.index), 0) % 4
    }

    /// How many items highlight `h` of a user holds (1 to 5).
    pub fn highlight_items(&self, user: &User, h: u64) -> u64 {
        1 + mix(self.seed, 15, u64::from(user.index), h) % 5
    }

    /// The story tray a logged-in account sees (the simulator's accounts follow no one in the
    /// data set, so it is a fixed pick): the first [`TRAY_SIZE`] public users with a story.
    pub fn story_tray(&self) -> Vec<u32> {
        self.users
            .iter()
            .filter(|u| !u.is_private && self.story_count(u) > 0)
            .take(TRAY_SIZE)
            .map(|u| u.index)
            .collect()
    }

    fn post_roll(&self, owner: u32, index: u32, k: u64) -> u64 {
        mix(self.seed, 4, Self::post_id(owner, index), k)
    }

    fn post_tags(&self, owner: u32, index: u32) -> [&'static str; 2] {
        [
            TAGS[(self.post_roll(owner, index, 3) % 20) as usize],
            TAGS[(self.post_roll(owner, index, 4) % 20) as usize],
        ]
    }

    fn post_tagged(&self, owner: u32, index: u32) -> Vec<u32> {
        let n = self.users.len() as u64;
        (0..self.post_roll(owner, index, 9) % 3)
            .map(|k| (mix(self.seed, 5, Self::post_id(owner, index), k) % n) as u32)
            .collect()
    }

    fn taken_at(&self, owner: u32, index: u32) -> i64 {
        // Newest first, about one post every day and a half.
        EPOCH - i64::from(index) * 129_600 - (self.post_roll(owner, index, 10) % 3600) as i64
    }

    /// Public posts with `tag`, newest first, as (owner, index).
    pub fn hashtag_posts(&self, tag: &str) -> &[(u32, u32)] {
        self.hashtags.get(tag).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Public posts `user` is tagged in, newest first.
    pub fn tagged_posts(&self, user: u32) -> &[(u32, u32)] {
        self.tagged_in
            .get(user as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.by_name.get(name).map(|&i| &self.users[i as usize])
    }

    /// The user with `id`, found arithmetically (ids are computed from indexes, see [`user_id`]),
    /// so a flood of unknown ids costs nothing.
    pub fn user_by_id(&self, id: u64) -> Option<&User> {
        let index = id.checked_sub(USER_ID_BASE)? / USER_ID_STRIDE;
        self.users
            .get(usize::try_from(index).ok()?)
            .filter(|u| u.id == id)
    }

    fn post_id(owner: u32, index: u32) -> u64 {
        ((u64::from(owner) + 1) << 20) | u64::from(index)
    }

    /// Post `index` (0 = newest) of user `owner`.
    pub fn post(&self, owner: u32, index: u32) -> Option<Post> {
        let user = self.users.get(owner as usize)?;
        if index >= user.post_count {
            return None;
        }
        let r = |k: u64| self.post_roll(owner, index, k);
        let kind = match r(1) % 10 {
            0..=6 => PostType::Image,
            7 | 8 => PostType::Sidecar(2 + (r(2) % 4) as u8),
            _ => PostType::Video,
        };
        let n = self.users.len() as u64;
        let [tag_a, tag_b] = self.post_tags(owner, index);
        let mention = &self.users[(r(5) % n) as usize].username;
        let caption = format!(
            "{} {} {} #{tag_a} #{tag_b} with @{mention}",
            WORDS[(r(6) % 20) as usize],
            WORDS[(r(7) % 20) as usize],
            WORDS[(r(8) % 20) as usize]
        );
        let tagged = self.post_tagged(owner, index);
        let id = Self::post_id(owner, index);
        Some(Post {
            owner,
            index,
            id,
            shortcode: shortcode(id),
            kind,
            caption,
            taken_at: self.taken_at(owner, index),
            likes: r(11) % 5000,
            comment_count: (r(12) % u64::from(self.sizes.max_comments + 1)) as u32,
            location: (r(13) % 3 == 0).then(|| PLACES[(r(14) % 8) as usize]),
            tagged,
        })
    }

    pub fn post_by_shortcode(&self, code: &str) -> Option<Post> {
        let id = shortcode_to_id(code)?;
        let owner = u32::try_from((id >> 20).checked_sub(1)?).ok()?;
        let index = (id & 0xF_FFFF) as u32;
        self.post(owner, index).filter(|p| p.shortcode == code)
    }

    /// The threaded replies of a comment (0 to 2): (id, owner, created_at, likes). Reply ids have
    /// bit 62 set, so they never collide with a top-level comment's id.
    pub fn replies(&self, cm: &Comment) -> Vec<(u64, u32, i64, u64)> {
        let n = self.users.len() as u64;
        (0..mix(self.seed, 12, cm.id, 0) % 3)
            .map(|r| {
                let owner = (mix(self.seed, 13, cm.id, r) % n) as u32;
                (
                    (1 << 62) | (cm.id * 4 + r),
                    owner,
                    cm.created_at + 30 * (r as i64 + 1),
                    r,
                )
            })
            .collect()
    }

    /// Comment `index` (0 = oldest) of `post`.
    pub fn comment(&self, post: &Post, index: u32) -> Option<Comment> {
        if index >= post.comment_count {
            return None;
        }
        let r = |k: u64| mix(self.seed, 6, post.id, u64::from(index) * 16 + k);
        let n = self.users.len() as u64;
        Some(Comment {
            id: post.id * 1000 + u64::from(index),
            owner: (r(1) % n) as u32,
            text: format!(
                "{} {} {}",
                WORDS[(r(2) % 20) as usize],
                WORDS[(r(3) % 20) as usize],
                WORDS[(r(4) % 20) as usize]
            ),
            created_at: post.taken_at + 60 * (i64::from(index) + 1) + (r(5) % 50) as i64,
            likes: r(6) % 200,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data_and_another_seed_does_not() {
        let a = DataSet::generate(7, Sizes::default());
        let b = DataSet::generate(7, Sizes::default());
        let c = DataSet::generate(8, Sizes::default());
        assert_eq!(a.users[10].username, b.users[10].username);
        assert_eq!(a.users[10].followers, b.users[10].followers);
        assert_ne!(
            a.users.iter().map(|u| &u.username).collect::<Vec<_>>(),
            c.users.iter().map(|u| &u.username).collect::<Vec<_>>()
        );
    }

    #[test]
    fn usernames_are_unique_and_the_follow_graph_is_consistent() {
        let d = DataSet::generate(1, Sizes::default());
        let mut names: Vec<_> = d.users.iter().map(|u| &u.username).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.users.len());
        for u in &d.users {
            for &v in &u.following {
                assert!(d.users[v as usize].followers.contains(&u.index));
            }
        }
    }

    #[test]
    fn hashtag_and_tagged_indexes_match_the_posts() {
        let d = DataSet::generate(4, Sizes::default());
        let posts = d.hashtag_posts("volcano");
        assert!(!posts.is_empty());
        for &(o, j) in posts {
            let p = d.post(o, j).unwrap();
            assert!(p.caption.contains("#volcano"));
            assert!(!d.users[o as usize].is_private);
        }
        assert!(posts.windows(2).all(|w| {
            d.post(w[0].0, w[0].1).unwrap().taken_at >= d.post(w[1].0, w[1].1).unwrap().taken_at
        }));
        let v = (0..d.users.len() as u32)
            .find(|&v| !d.tagged_posts(v).is_empty())
            .unwrap();
        for &(o, j) in d.tagged_posts(v) {
            assert!(d.post(o, j).unwrap().tagged.contains(&v));
        }
    }

    #[test]
    fn every_user_is_found_by_id_and_unknown_ids_are_not() {
        let d = DataSet::generate(5, Sizes::default());
        for u in &d.users {
            assert_eq!(d.user_by_id(u.id).map(|f| f.index), Some(u.index));
        }
        for bad in [0, 999_999, d.users[3].id + 1, u64::MAX] {
            assert!(d.user_by_id(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn posts_round_trip_through_their_shortcodes() {
        let d = DataSet::generate(3, Sizes::default());
        let u = d.users.iter().find(|u| u.post_count > 3).unwrap();
        let p = d.post(u.index, 2).unwrap();
        let again = d.post_by_shortcode(&p.shortcode).unwrap();
        assert_eq!((again.owner, again.index, again.id), (u.index, 2, p.id));
        assert!(d.post_by_shortcode("nonexistent").is_none());
        assert!(d.post(u.index, u.post_count).is_none());
        let newer = d.post(u.index, 1).unwrap();
        assert!(newer.taken_at > p.taken_at, "index 0 is the newest");
    }
}
