"""Korean and English words -> English visual vocabulary for the offline labeller.

Korean entries are stems: a lyric token matches the longest stem it starts with, so particles
and endings (바다에서, 그리워서) still match. One-syllable stems (비, 별, 꽃, 밤 ...) are ambiguous as
prefixes (비밀 "secret" is not rain), so they match only alone, before a particle, or as the first
half of a compound whose rest also matches (밤편지 = night + letter). 눈 (snow, but mostly "eyes"
in lyrics) is left out; 눈송이, 함박눈 are in.
English entries match whole words (a trailing plural "s" is tolerated).
"""

from __future__ import annotations

MOODS = {
    # Korean
    "사랑": "romantic", "설레": "giddy", "설렘": "giddy", "행복": "joyful", "기쁨": "joyful", "기뻐": "joyful",
    "웃음": "cheerful", "미소": "cheerful", "슬픔": "melancholic", "슬퍼": "melancholic", "슬프": "melancholic",
    "눈물": "melancholic", "아파": "heartbroken", "아프": "heartbroken", "상처": "heartbroken",
    "이별": "bittersweet", "헤어": "bittersweet", "떠나": "bittersweet", "그리움": "nostalgic",
    "그리워": "nostalgic", "그립": "nostalgic", "추억": "nostalgic", "기억": "nostalgic", "외로": "lonely",
    "외롭": "lonely", "혼자": "solitary", "꿈": "dreamy", "꿈꾸": "dreamy", "희망": "hopeful", "자유": "free-spirited",
    "청춘": "youthful", "신나": "energetic", "신난": "energetic", "뜨거": "passionate", "열정": "passionate",
    "위로": "comforting", "따뜻": "warm", "따스": "warm", "차가": "cold", "고요": "serene", "평화": "peaceful",
    "조용": "serene", "어둠": "dark", "어두": "dark", "두려": "ominous", "무서": "ominous", "분노": "intense",
    "화려": "glamorous", "반짝": "glittering", "용기": "triumphant", "빛나": "radiant", "영원": "timeless",
    "기다": "wistful", "멀어": "wistful", "떠올": "nostalgic", "입맞춤": "romantic", "잠들": "sleepy", "취해": "hazy", "흔들": "restless",
    # English
    "love": "romantic", "lover": "romantic", "kiss": "romantic", "tears": "melancholic", "cry": "melancholic",
    "crying": "melancholic", "sad": "melancholic", "sorrow": "melancholic", "lonely": "lonely", "alone": "solitary",
    "happy": "joyful", "joy": "joyful", "smile": "cheerful", "dance": "energetic", "dancing": "energetic",
    "party": "energetic", "dream": "dreamy", "dreaming": "dreamy", "miss": "nostalgic", "remember": "nostalgic",
    "memory": "nostalgic", "memories": "nostalgic", "goodbye": "bittersweet", "farewell": "bittersweet",
    "hope": "hopeful", "free": "free-spirited", "freedom": "free-spirited", "dark": "dark", "darkness": "dark",
    "broken": "heartbroken", "heartbreak": "heartbroken", "shine": "radiant", "shining": "radiant",
    "young": "youthful", "calm": "serene", "quiet": "serene", "wild": "wild", "burning": "passionate",
    "forever": "timeless", "waiting": "wistful", "afraid": "ominous", "fear": "ominous",
}

OBJECTS = {
    # Korean
    "바다": "ocean", "파도": "waves", "하늘": "sky", "구름": "clouds", "별": "stars", "별빛": "starlight",
    "달": "moon", "달빛": "moonlight", "햇살": "sunlight", "햇빛": "sunlight", "태양": "sun", "비": "rain",
    "빗물": "rain", "빗소리": "rain", "소나기": "rain shower", "거리": "street", "도시": "city", "골목": "alley",
    "길": "road", "기차": "train", "버스": "bus", "자동차": "car", "창문": "window", "창가": "window",
    "꽃": "flowers", "꽃잎": "petals", "벚꽃": "cherry blossoms", "장미": "roses", "나무": "trees", "숲": "forest",
    "산": "mountains", "강": "river", "호수": "lake", "불꽃": "fireworks", "불빛": "city lights",
    "노을": "sunset", "석양": "sunset", "새벽": "dawn", "밤": "night", "밤하늘": "night sky", "아침": "morning",
    "여름": "summer", "겨울": "winter", "봄": "spring", "봄날": "spring", "가을": "autumn",
    "눈송이": "snowflakes", "눈꽃": "snowflakes", "함박눈": "snow", "눈사람": "snowman", "반딧불": "fireflies",
    "바람": "wind", "우산": "umbrella", "편지": "letter", "사진": "photograph", "시계": "clock", "커피": "coffee",
    "거울": "mirror", "기타": "guitar", "피아노": "piano", "파티": "party lights", "무대": "stage",
    "네온": "neon lights", "우주": "outer space", "행성": "planet", "지구": "earth", "섬": "island",
    "모래": "sand", "해변": "beach", "고양이": "cat", "강아지": "puppy", "나비": "butterfly", "새": "bird",
    "눈물": "tears", "그림자": "shadow", "촛불": "candle", "풍선": "balloons", "자전거": "bicycle",
    "계단": "stairs", "옥상": "rooftop", "지붕": "rooftop", "카페": "cafe", "정류장": "bus stop",
    "공항": "airport", "비행기": "airplane", "불": "fire", "연기": "smoke", "다이아": "diamonds", "왕관": "crown",
    "춤": "dance floor", "교실": "classroom", "운동장": "playground", "놀이공원": "amusement park",
    "불꽃놀이": "fireworks", "무지개": "rainbow", "안개": "fog", "유리": "glass", "침대": "bed", "방": "room",
    # English
    "ocean": "ocean", "sea": "ocean", "waves": "waves", "wave": "waves", "sky": "sky", "cloud": "clouds",
    "clouds": "clouds", "star": "stars", "stars": "stars", "moon": "moon", "moonlight": "moonlight", "sun": "sun",
    "sunshine": "sunlight", "sunlight": "sunlight", "rain": "rain", "snow": "snow", "city": "city",
    "street": "street", "streets": "street", "night": "night", "road": "road", "highway": "highway", "car": "car",
    "train": "train", "window": "window", "flower": "flowers", "flowers": "flowers", "rose": "roses",
    "roses": "roses", "tree": "trees", "trees": "trees", "forest": "forest", "mountain": "mountains",
    "river": "river", "lake": "lake", "beach": "beach", "island": "island", "fireworks": "fireworks",
    "lights": "city lights", "neon": "neon lights", "space": "outer space", "planet": "planet",
    "bird": "bird", "butterfly": "butterfly", "cat": "cat", "dog": "dog", "guitar": "guitar", "piano": "piano",
    "candle": "candle", "mirror": "mirror", "letter": "letter", "bridge": "bridge", "rooftop": "rooftop",
    "summer": "summer", "winter": "winter", "autumn": "autumn", "wind": "wind", "umbrella": "umbrella",
    "fire": "fire", "smoke": "smoke", "diamond": "diamonds", "diamonds": "diamonds", "crown": "crown",
    "sunset": "sunset", "dawn": "dawn", "fog": "fog", "rainbow": "rainbow", "stage": "stage", "desert": "desert",
}

COLOURS = {
    # Korean
    "빨간": "red", "빨강": "red", "붉은": "crimson", "파란": "blue", "파랑": "blue", "푸른": "blue",
    "노란": "yellow", "노랑": "yellow", "하얀": "white", "하얗": "white", "흰": "white", "까만": "black",
    "검은": "black", "까맣": "black", "초록": "green", "녹색": "green", "보라": "purple", "분홍": "pink",
    "핑크": "pink", "주황": "orange", "금빛": "gold", "황금": "gold", "은빛": "silver", "회색": "grey",
    "하늘색": "sky blue",
    # English
    "red": "red", "blue": "blue", "yellow": "yellow", "white": "white", "black": "black", "green": "green",
    "purple": "purple", "pink": "pink", "orange": "orange", "gold": "gold", "golden": "gold",
    "silver": "silver", "grey": "grey", "gray": "grey", "violet": "violet", "crimson": "crimson",
}

# Melon genre strings ("발라드, 국내드라마", "랩/힙합") and plain English genres.
GENRES = {
    "발라드": "ballad", "댄스": "dance pop", "랩/힙합": "hip hop", "힙합": "hip hop", "r&b/soul": "r&b",
    "알앤비": "r&b", "인디음악": "indie", "인디": "indie", "록/메탈": "rock", "록": "rock", "메탈": "metal",
    "트로트": "trot", "성인가요/트로트": "trot", "포크/블루스": "folk", "포크": "folk", "블루스": "blues",
    "일렉트로니카": "electronic", "국내드라마": "soundtrack", "국외영화": "soundtrack", "ost": "soundtrack",
    "재즈": "jazz", "클래식": "classical", "뉴에이지": "new age", "j-pop": "j-pop", "pop": "pop",
    "아이돌": "k-pop", "k-pop": "k-pop", "kpop": "k-pop", "ballad": "ballad", "dance": "dance pop",
    "hip hop": "hip hop", "hip-hop": "hip hop", "rap": "hip hop", "r&b": "r&b", "soul": "r&b", "indie": "indie",
    "rock": "rock", "metal": "metal", "folk": "folk", "blues": "blues", "electronic": "electronic",
    "edm": "electronic", "soundtrack": "soundtrack", "jazz": "jazz", "classical": "classical",
    "new age": "new age", "trot": "trot", "country": "folk",
}

# Art style per English genre; the fallback suits any genre.
GENRE_STYLE = {
    "ballad": "soft-focus film photograph", "dance pop": "glossy high-contrast pop art",
    "hip hop": "gritty urban street photograph", "r&b": "moody cinematic photograph",
    "indie": "hand-drawn risograph illustration", "rock": "grainy analog film photograph",
    "metal": "dark engraved etching", "trot": "retro 1970s illustration", "folk": "warm watercolor painting",
    "blues": "smoky vintage photograph", "electronic": "neon synthwave digital art",
    "soundtrack": "cinematic matte painting", "jazz": "smoky vintage photograph",
    "classical": "classical oil painting", "new age": "ethereal minimalist painting",
    "k-pop": "vivid glossy editorial photograph", "j-pop": "pastel anime-style illustration",
    "pop": "bright minimalist digital illustration",
}
DEFAULT_STYLE = "minimalist digital painting"

# When the lyrics name nothing visual: a mood, a scene and colours that suit the genre.
GENRE_DEFAULTS = {
    "ballad": ("tender", "empty street at dusk", ("dusty rose", "soft grey")),
    "dance pop": ("energetic", "dance floor", ("electric magenta", "cyan")),
    "hip hop": ("confident", "city rooftop at night", ("black", "gold")),
    "r&b": ("sensual", "dim lounge", ("deep purple", "amber")),
    "indie": ("wistful", "quiet bedroom window", ("faded teal", "cream")),
    "rock": ("rebellious", "open highway", ("black", "crimson")),
    "metal": ("intense", "storm over mountains", ("charcoal", "steel grey")),
    "trot": ("festive", "seaside harbour", ("warm red", "gold")),
    "folk": ("gentle", "country road", ("earth brown", "sage green")),
    "electronic": ("hypnotic", "neon city", ("electric blue", "magenta")),
    "soundtrack": ("cinematic", "vast landscape", ("deep blue", "warm gold")),
    "jazz": ("smoky", "late-night bar", ("amber", "deep brown")),
    "k-pop": ("bold", "pastel stage", ("hot pink", "lilac")),
}
DEFAULT_SCENES = ("city skyline at dusk", "lone tree on a hill", "open road", "quiet room with a window",
                  "moonlit sea", "field of tall grass")
DEFAULT_MOOD = "atmospheric"
DEFAULT_GENRE = "pop"

# Colours that a scene or mood suggests, used when the lyrics name too few colours.
PALETTE_HINTS = {
    "ocean": "deep blue", "waves": "aqua", "sky": "sky blue", "night": "midnight blue", "night sky": "midnight blue",
    "moon": "silver", "moonlight": "silver", "stars": "silver", "starlight": "silver", "sunset": "orange",
    "dawn": "peach", "sunlight": "warm gold", "sun": "warm gold", "rain": "slate grey", "rain shower": "slate grey",
    "snow": "white", "snowflakes": "white", "winter": "icy blue", "summer": "turquoise", "autumn": "burnt orange",
    "spring": "pale green", "city lights": "amber", "neon lights": "magenta", "city": "steel grey",
    "forest": "forest green", "trees": "forest green", "flowers": "pink", "petals": "pink",
    "cherry blossoms": "pale pink", "roses": "crimson", "fire": "crimson", "fireworks": "gold", "fog": "pale grey",
    "beach": "sand beige", "desert": "sand beige", "outer space": "deep violet", "candle": "amber",
    "romantic": "rose pink", "melancholic": "muted blue", "joyful": "sunny yellow", "energetic": "electric magenta",
    "nostalgic": "sepia", "dark": "charcoal", "dreamy": "lavender", "lonely": "cool grey", "passionate": "deep red",
    "serene": "pale teal", "hopeful": "warm gold", "heartbroken": "dusky blue", "bittersweet": "dusty rose",
    "warm": "amber", "cold": "icy blue", "glamorous": "gold", "radiant": "warm gold",
}
DEFAULT_PALETTE = ("muted teal", "warm beige")

# Endings that may follow a one-syllable stem (particles and common verb endings).
PARTICLES = frozenset(
    "은 는 이 가 을 를 에 의 도 로 와 과 야 아 고 요 만 서 에서 으로 에게 까지 부터 처럼 보다 이야 이여 "
    "속 속에 속에서 위 위에 아래 같은 같이 들 들이 들을 들은".split()
)
